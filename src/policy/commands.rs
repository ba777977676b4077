//! Command profiles: which commands a listener accepts, and that the
//! administrative ones (RELOAD, SHUTDOWN, QUIT) on a Unix socket need an
//! administrator (see [`super::Admins`]).

use std::collections::HashSet;

use super::ListenerKind;
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
    /// `words` were validated by the configuration.
    pub fn new(kind: ListenerKind, words: &[String]) -> Profile {
        let mut allowed: HashSet<CommandKind> =
            words.iter().filter_map(|w| parse_word(w)).collect();
        if allowed.contains(&CommandKind::IdSession) {
            allowed.insert(CommandKind::End);
        }
        Profile { kind, allowed }
    }

    /// `admin`: the peer is an administrator (decided by the supervisor
    /// from the identity it recorded at accept).
    pub fn decide(&self, cmd: CommandKind, admin: bool) -> Decision {
        if cmd == CommandKind::Unknown {
            // Not a policy matter: clamd's UNKNOWN COMMAND answers it.
            return Decision::Allow;
        }
        if cmd == CommandKind::Maint {
            // Not a clamd command, not in any profile: administrators on a
            // Unix socket, whatever the profile lists.
            return match (self.kind, admin) {
                (ListenerKind::Unix, true) => Decision::Allow,
                (ListenerKind::Unix, false) => Decision::NotAdmin,
                (ListenerKind::Tcp, _) => Decision::NotOnListener,
            };
        }
        if !self.allowed.contains(&cmd) {
            return Decision::NotOnListener;
        }
        if is_admin(cmd) && self.kind == ListenerKind::Unix && !admin {
            return Decision::NotAdmin;
        }
        Decision::Allow
    }

    /// Does this listener take any command that names local files?
    pub fn allows_paths(&self) -> bool {
        CommandKind::all().any(|k| k.is_path_scan() && self.allowed.contains(&k))
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

    #[test]
    fn tcp_default_refuses_dangerous_commands() {
        let words: Vec<String> = TCP_DEFAULT.iter().map(|s| s.to_string()).collect();
        let p = Profile::new(ListenerKind::Tcp, &words);
        let anyone = false;
        for k in [
            CommandKind::Ping,
            CommandKind::Instream,
            CommandKind::IdSession,
            CommandKind::End,
        ] {
            assert_eq!(p.decide(k, anyone), Decision::Allow, "{k:?}");
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
            assert_eq!(p.decide(k, anyone), Decision::NotOnListener, "{k:?}");
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
        let p = Profile::new(ListenerKind::Unix, &all_words());
        assert_eq!(p.decide(CommandKind::Shutdown, true), Decision::Allow);
        assert_eq!(p.decide(CommandKind::Reload, true), Decision::Allow);
        assert_eq!(p.decide(CommandKind::Quit, false), Decision::NotAdmin);
        assert_eq!(p.decide(CommandKind::Scan, false), Decision::Allow);
        assert!(p.allows_paths());
        let words: Vec<String> = TCP_DEFAULT.iter().map(|s| s.to_string()).collect();
        assert!(!Profile::new(ListenerKind::Tcp, &words).allows_paths());
    }

    #[test]
    fn maint_is_for_administrators_on_unix_whatever_the_profile() {
        let unix = Profile::new(ListenerKind::Unix, &["PING".to_string()]);
        assert_eq!(unix.decide(CommandKind::Maint, true), Decision::Allow);
        assert_eq!(unix.decide(CommandKind::Maint, false), Decision::NotAdmin);
        let tcp = Profile::new(ListenerKind::Tcp, &all_words());
        assert_eq!(
            tcp.decide(CommandKind::Maint, true),
            Decision::NotOnListener
        );
        assert!(!unix.words().any(|w| w == "MAINT"));
        assert!(parse_word("MAINT").is_none(), "not a configurable word");
    }
}
