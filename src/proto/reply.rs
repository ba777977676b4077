//! Reply encoders. Every reply clamd sends is `[<id>: ]<text><terminator>`;
//! the functions here build the `<text>` parts byte for byte.

/// Where a reply goes: the session id (inside IDSESSION) and the terminator
/// of the framing the request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyTo {
    pub id: Option<u32>,
    pub term: u8,
}

impl ReplyTo {
    pub fn new(id: Option<u32>, term: u8) -> Self {
        ReplyTo { id, term }
    }

    /// Appends one whole reply line.
    pub fn line(&self, out: &mut Vec<u8>, text: &[u8]) {
        if let Some(id) = self.id {
            out.extend_from_slice(id.to_string().as_bytes());
            out.extend_from_slice(b": ");
        }
        out.extend_from_slice(text);
        out.push(self.term);
    }

    /// One whole reply line as a new buffer.
    pub fn to_vec(&self, text: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len() + 12);
        self.line(&mut out, text);
        out
    }
}

/// Sent on a read timeout; clamd always ends it in `\n` and never prefixes it.
pub const COMMAND_READ_TIMED_OUT: &[u8] = b"COMMAND READ TIMED OUT\n";

pub const PONG: &[u8] = b"PONG";
pub const UNKNOWN_COMMAND: &[u8] = b"UNKNOWN COMMAND";
pub const RELOADING: &[u8] = b"RELOADING";
pub const ERROR_PROCESSING: &[u8] = b"Error processing command. ERROR";
pub const SIZE_LIMIT_EXCEEDED: &[u8] = b"INSTREAM size limit exceeded. ERROR";
pub const NO_FD_RECEIVED: &[u8] = b"No file descriptor received. ERROR";
pub const FD_WITHOUT_FILDES: &[u8] = b"PROTOCOL ERROR: ancillary data sent without FILDES. ERROR";
pub const INVALID_IN_SESSION: &[u8] = b"Command invalid inside IDSESSION. ERROR";
pub const ONLY_PREFIXED_IN_SESSION: &[u8] =
    b"Only nCMDS\\n and zCMDS\\0 are accepted inside IDSESSION. ERROR";

/// `<name>: OK`
pub fn ok(name: &[u8]) -> Vec<u8> {
    join(name, b"OK")
}

/// `<name>: <virus> FOUND`
pub fn found(name: &[u8], virus: &[u8]) -> Vec<u8> {
    let mut t = join(name, virus);
    t.extend_from_slice(b" FOUND");
    t
}

/// `<name>: <msg> ERROR`
pub fn error(name: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut t = join(name, msg);
    t.extend_from_slice(b" ERROR");
    t
}

/// `<name>: <status>` with no trailing ERROR word (e.g. `Excluded`).
pub fn status(name: &[u8], status: &[u8]) -> Vec<u8> {
    join(name, status)
}

/// `<name>: File path check failure: <strerror>. ERROR`
pub fn path_check_failure(name: &[u8], strerror: &str) -> Vec<u8> {
    let mut msg = b"File path check failure: ".to_vec();
    msg.extend_from_slice(strerror.as_bytes());
    msg.push(b'.');
    error(name, &msg)
}

/// `ClamAV <version>` or `ClamAV <version>/<db version>/<db time>`.
pub fn version(engine_version: &str, db: Option<(u32, &str)>) -> Vec<u8> {
    match db {
        Some((ver, time)) => format!("ClamAV {engine_version}/{ver}/{time}").into_bytes(),
        None => format!("ClamAV {engine_version}").into_bytes(),
    }
}

/// `<version>| COMMANDS: A B C`
pub fn version_commands<'a>(version: &[u8], words: impl Iterator<Item = &'a str>) -> Vec<u8> {
    let mut t = version.to_vec();
    t.extend_from_slice(b"| COMMANDS:");
    for w in words {
        t.push(b' ');
        t.extend_from_slice(w.as_bytes());
    }
    t
}

fn join(name: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(name.len() + rest.len() + 10);
    t.extend_from_slice(name);
    t.extend_from_slice(b": ");
    t.extend_from_slice(rest);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_prefix_and_terminators() {
        assert_eq!(ReplyTo::new(None, 0).to_vec(PONG), b"PONG\0");
        assert_eq!(ReplyTo::new(Some(3), b'\n').to_vec(PONG), b"3: PONG\n");
        assert_eq!(
            ReplyTo::new(None, 0).to_vec(&found(b"stream", b"Eicar")),
            b"stream: Eicar FOUND\0"
        );
    }

    #[test]
    fn path_errors() {
        assert_eq!(
            path_check_failure(b"/p", "No such file or directory"),
            b"/p: File path check failure: No such file or directory. ERROR"
        );
    }

    #[test]
    fn version_forms() {
        assert_eq!(version("1.4.6", None), b"ClamAV 1.4.6");
        assert_eq!(
            version("1.4.6", Some((27999, "Fri Nov 27 12:27:41 2026"))),
            b"ClamAV 1.4.6/27999/Fri Nov 27 12:27:41 2026"
        );
    }
}
