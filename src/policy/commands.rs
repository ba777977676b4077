//! Command profiles: which commands a listener accepts, and who may use the
//! administrative ones (RELOAD, SHUTDOWN, QUIT) on a Unix socket.

use std::collections::HashSet;

use super::{ListenerKind, PeerCreds};
use crate::proto::CommandKind;

/// What the policy says about one command from one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// The listener's profile does not include the command.
    NotOnListener,
    /// Administrative command from a peer that is not an administrator.
    NotAdmin,
}

/// A listener's resolved profile.
#[derive(Debug, Clone)]
pub struct Profile {
    pub kind: ListenerKind,
    allowed: HashSet<CommandKind>,
    admin_uids: HashSet<u32>,
    admin_gids: HashSet<u32>,
}

/// Commands that change or stop the daemon.
pub fn is_admin(kind: CommandKind) -> bool {
    matches!(
        kind,
        CommandKind::Reload | CommandKind::Shutdown | CommandKind::Quit
    )
}

/// Parses a configured command word (`"SCAN"`); `None` if clamd has no such command.
pub fn parse_word(word: &str) -> Option<CommandKind> {
    CommandKind::all().find(|k| k.word() == word)
}

impl Profile {
    /// `words` were validated by the configuration; `admin_uids`/`admin_gids`
    /// apply to Unix peers (root and the daemon's own user are always admins).
    pub fn new(
        kind: ListenerKind,
        words: &[String],
        admin_uids: &[u32],
        admin_gids: &[u32],
    ) -> Profile {
        let mut allowed: HashSet<CommandKind> =
            words.iter().filter_map(|w| parse_word(w)).collect();
        if allowed.contains(&CommandKind::IdSession) {
            allowed.insert(CommandKind::End);
        }
        let mut admin_uids: HashSet<u32> = admin_uids.iter().copied().collect();
        admin_uids.insert(0);
        admin_uids.insert(nix::unistd::geteuid().as_raw());
        Profile {
            kind,
            allowed,
            admin_uids,
            admin_gids: admin_gids.iter().copied().collect(),
        }
    }

    pub fn decide(&self, cmd: CommandKind, peer: &PeerCreds) -> Decision {
        if cmd == CommandKind::Unknown {
            // Not a policy matter: clamd's UNKNOWN COMMAND answers it.
            return Decision::Allow;
        }
        if !self.allowed.contains(&cmd) {
            return Decision::NotOnListener;
        }
        if is_admin(cmd) && self.kind == ListenerKind::Unix && !self.is_admin_peer(peer) {
            return Decision::NotAdmin;
        }
        Decision::Allow
    }

    fn is_admin_peer(&self, peer: &PeerCreds) -> bool {
        match peer.uid {
            Some(uid) if self.admin_uids.contains(&uid) => true,
            Some(_) => peer.gids.iter().any(|g| self.admin_gids.contains(g)),
            None => false,
        }
    }

    /// The words VERSIONCOMMANDS lists on this listener, in clamd's order.
    pub fn words(&self) -> impl Iterator<Item = &'static str> + '_ {
        CommandKind::all()
            .filter(|k| self.allowed.contains(k))
            .map(CommandKind::word)
    }
}

/// Default TCP profile: nothing that reads local files or changes the daemon.
pub const TCP_DEFAULT: &[&str] = &[
    "PING",
    "VERSION",
    "VERSIONCOMMANDS",
    "INSTREAM",
    "IDSESSION",
    "END",
];

/// Every command clamd knows (the Unix default).
pub fn all_words() -> Vec<String> {
    CommandKind::all().map(|k| k.word().to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gids: &[u32]) -> PeerCreds {
        PeerCreds {
            uid: Some(uid),
            gid: gids.first().copied(),
            gids: gids.to_vec(),
            pid: None,
        }
    }

    #[test]
    fn tcp_default_refuses_dangerous_commands() {
        let words: Vec<String> = TCP_DEFAULT.iter().map(|s| s.to_string()).collect();
        let p = Profile::new(ListenerKind::Tcp, &words, &[], &[]);
        let anyone = PeerCreds::remote();
        for k in [
            CommandKind::Ping,
            CommandKind::Instream,
            CommandKind::IdSession,
            CommandKind::End,
        ] {
            assert_eq!(p.decide(k, &anyone), Decision::Allow, "{k:?}");
        }
        for k in [
            CommandKind::Scan,
            CommandKind::Shutdown,
            CommandKind::Quit,
            CommandKind::Reload,
            CommandKind::Stats,
            CommandKind::Fildes,
            CommandKind::AllMatchScan,
        ] {
            assert_eq!(p.decide(k, &anyone), Decision::NotOnListener, "{k:?}");
        }
        assert_eq!(
            p.words().collect::<Vec<_>>(),
            vec![
                "PING",
                "VERSIONCOMMANDS",
                "VERSION",
                "END",
                "IDSESSION",
                "INSTREAM"
            ]
        );
    }

    #[test]
    fn unix_admin_commands_need_an_admin() {
        let p = Profile::new(ListenerKind::Unix, &all_words(), &[1234], &[77]);
        assert_eq!(
            p.decide(CommandKind::Shutdown, &peer(0, &[0])),
            Decision::Allow
        );
        assert_eq!(
            p.decide(CommandKind::Reload, &peer(1234, &[100])),
            Decision::Allow
        );
        assert_eq!(
            p.decide(CommandKind::Reload, &peer(4321, &[100, 77])),
            Decision::Allow
        );
        assert_eq!(
            p.decide(CommandKind::Quit, &peer(65534, &[65534])),
            Decision::NotAdmin
        );
        assert_eq!(
            p.decide(CommandKind::Scan, &peer(65534, &[65534])),
            Decision::Allow
        );
    }
}
