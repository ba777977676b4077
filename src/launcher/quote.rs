//! The command text for one detection: `%v` replaced by the virus name,
//! quoted for where it stands in the shell text, and `%f` by clamd's fixed
//! sentence (CVE-2024-20328: clamd 0.104–1.2 put the file name into the
//! shell command; the file name is only ever in the environment).
//!
//! A name made only of letters, digits and `._-+:/,@%` (every ClamAV
//! signature name) is inserted as is, exactly as clamd does: these
//! characters mean nothing to the shell in any context. Any other name is
//! quoted for where `%v` stands: outside quotes as `'name'` (single-quote
//! shell quoting, `'` as `'\''`), inside `'…'` with `'` as `'\''`, inside
//! `"…"` with `$ \` " \\` backslashed. Where the context cannot be told for
//! certain (after `$(`, `${`, a backquote, a here-document, or right after
//! `\` or `$`), such a name runs no command, rather than risk running part
//! of it. Runs in the launcher, never in the root process.
#![forbid(unsafe_code)]

/// What clamd 1.4 puts in place of `%f`.
pub const FILENAME_DISABLED_MESSAGE: &str = "The filename format character has been disabled due to security concerns, use the 'CLAM_VIRUSEVENT_FILENAME' environment variable instead.";

/// The command text with `%v` replaced by `virus`, quoted for where it
/// stands, and `%f` by [`FILENAME_DISABLED_MESSAGE`] (see the module docs).
/// `Err` when `virus` needs quoting at a place whose quoting context is
/// unclear.
pub fn substitute(template: &str, virus: &str) -> Result<String, Unquotable> {
    let plain = virus.bytes().all(is_plain);
    let mut out = String::with_capacity(template.len() + virus.len());
    let mut lexer = Lexer::default();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.peek() {
                Some('v') => {
                    chars.next();
                    let text = if plain {
                        virus.to_string()
                    } else {
                        lexer.quote(virus).ok_or(Unquotable)?
                    };
                    lexer.feed_str(&text);
                    out.push_str(&text);
                    continue;
                }
                Some('f') => {
                    chars.next();
                    lexer.feed_str(FILENAME_DISABLED_MESSAGE);
                    out.push_str(FILENAME_DISABLED_MESSAGE);
                    continue;
                }
                _ => {}
            }
        }
        lexer.feed(c);
        out.push(c);
    }
    Ok(out)
}

/// `%v` stands where the shell's quoting context is unclear and the virus
/// name needs quoting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unquotable;

/// Bytes that mean nothing to the shell anywhere in a word.
fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._-+:/,@%".contains(&b)
}

/// Where a POSIX shell is, reading the command text so far: enough to quote
/// a word correctly at that point, and to say when it cannot be sure.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Context {
    #[default]
    Unquoted,
    Comment,
    Single,
    Double,
    /// Inside `$(…)`, `${…}`, backquotes or a here-document: not tracked.
    Unclear,
}

#[derive(Debug, Clone, Copy)]
struct Lexer {
    context: Context,
    /// The previous character was an unquoted or double-quoted `\`.
    escaped: bool,
    /// The previous character was an unescaped `$`.
    dollar: bool,
    /// The previous character was `<` (outside quotes).
    less: bool,
    /// At the start of a word (for `#` comments).
    word_start: bool,
}

impl Default for Lexer {
    fn default() -> Lexer {
        Lexer {
            context: Context::Unquoted,
            escaped: false,
            dollar: false,
            less: false,
            word_start: true,
        }
    }
}

impl Lexer {
    fn feed_str(&mut self, s: &str) {
        for c in s.chars() {
            self.feed(c);
        }
    }

    fn feed(&mut self, c: char) {
        let escaped = std::mem::take(&mut self.escaped);
        let dollar = std::mem::take(&mut self.dollar);
        let less = std::mem::take(&mut self.less);
        match self.context {
            Context::Unclear => {}
            Context::Comment => {
                if c == '\n' {
                    self.context = Context::Unquoted;
                    self.word_start = true;
                }
            }
            Context::Single => {
                if c == '\'' {
                    self.context = Context::Unquoted;
                }
            }
            Context::Double => {
                if escaped {
                    return;
                }
                match c {
                    '\\' => self.escaped = true,
                    '"' => self.context = Context::Unquoted,
                    '`' => self.context = Context::Unclear,
                    '(' | '{' if dollar => self.context = Context::Unclear,
                    '$' => self.dollar = true,
                    _ => {}
                }
            }
            Context::Unquoted => {
                let word_start = std::mem::replace(
                    &mut self.word_start,
                    matches!(c, ' ' | '\t' | '\n' | ';' | '&' | '|' | '(' | ')'),
                );
                if escaped {
                    self.word_start = false;
                    return;
                }
                match c {
                    '\\' => self.escaped = true,
                    '\'' if dollar => self.context = Context::Unclear,
                    '"' if dollar => self.context = Context::Unclear,
                    '(' | '{' if dollar => self.context = Context::Unclear,
                    '\'' => self.context = Context::Single,
                    '"' => self.context = Context::Double,
                    '`' => self.context = Context::Unclear,
                    '<' if less => self.context = Context::Unclear,
                    '<' => self.less = true,
                    '$' => self.dollar = true,
                    '#' if word_start => self.context = Context::Comment,
                    _ => {}
                }
            }
        }
    }

    /// `name` as one literal word at this point, or `None` when unclear.
    fn quote(&self, name: &str) -> Option<String> {
        if self.escaped || self.dollar {
            return None;
        }
        match self.context {
            Context::Unquoted | Context::Comment => {
                Some(format!("'{}'", name.replace('\'', "'\\''")))
            }
            Context::Single => Some(name.replace('\'', "'\\''")),
            Context::Double => {
                let mut s = String::with_capacity(name.len() + 8);
                for c in name.chars() {
                    if matches!(c, '$' | '`' | '"' | '\\') {
                        s.push('\\');
                    }
                    s.push(c);
                }
                Some(s)
            }
            Context::Unclear => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// What `sh -c 'printf %s\\n WORDS'` prints for the substituted command.
    fn shell_words(template: &str, virus: &str) -> String {
        let cmd = substitute(template, virus).unwrap();
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg(&cmd)
            .output()
            .unwrap();
        assert!(out.status.success(), "{cmd}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn plain_names_are_inserted_as_clamd_does() {
        assert_eq!(
            substitute(
                "/x.sh /tmp \"Virus found: %v\"",
                "ClamAV-Test-File.UNOFFICIAL"
            )
            .unwrap(),
            "/x.sh /tmp \"Virus found: ClamAV-Test-File.UNOFFICIAL\""
        );
        assert_eq!(
            substitute("a %v b %v %%v", "Win.Test.EICAR_HDB-1").unwrap(),
            "a Win.Test.EICAR_HDB-1 b Win.Test.EICAR_HDB-1 %Win.Test.EICAR_HDB-1"
        );
        // Even where the context is unclear.
        assert_eq!(
            substitute("echo \"$(date) %v\"", "Heuristics.Limits.Exceeded").unwrap(),
            "echo \"$(date) Heuristics.Limits.Exceeded\""
        );
    }

    #[test]
    fn percent_f_is_disabled_as_in_clamd() {
        assert_eq!(
            substitute("echo %f", "X").unwrap(),
            format!("echo {FILENAME_DISABLED_MESSAGE}")
        );
    }

    #[test]
    fn other_names_stay_one_literal_word_in_every_context() {
        let hostile = [
            "x'; touch /tmp/cs-pwned; '",
            "a\"; touch /tmp/cs-pwned; \"",
            "$(touch /tmp/cs-pwned)",
            "`touch /tmp/cs-pwned`",
            "a b\\c ${HOME} *",
            "'",
            "\\",
        ];
        for name in hostile {
            for (template, want) in [
                ("printf '%s\\n' %v", format!("{name}\n")),
                ("printf '%s\\n' \"%v\"", format!("{name}\n")),
                ("printf '%s\\n' '%v'", format!("{name}\n")),
                ("printf '%s\\n' \"name: %v.\"", format!("name: {name}.\n")),
                ("printf '%s\\n' 'name: %v.'", format!("name: {name}.\n")),
                ("printf '%s\\n' x%vy", format!("x{name}y\n")),
                ("printf '%s\\n' %v # %v", format!("{name}\n")),
            ] {
                assert_eq!(
                    shell_words(template, name),
                    want,
                    "{template} with {name:?}"
                );
            }
        }
        assert!(!std::path::Path::new("/tmp/cs-pwned").exists());
    }

    #[test]
    fn unclear_contexts_refuse_names_that_need_quoting() {
        for template in [
            "echo $(echo %v)",
            "echo \"$(date) %v\"",
            "echo `echo %v`",
            "echo ${X:-%v}",
            "echo \\%v",
            "echo $%v",
            "cat <<EOF\n%v\nEOF",
            "echo \"\\%v\"",
        ] {
            assert_eq!(substitute(template, "a;b"), Err(Unquotable), "{template}");
            assert!(substitute(template, "Win.Test-1").is_ok(), "{template}");
        }
    }
}
