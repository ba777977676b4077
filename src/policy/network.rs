//! TCP admission: the allow-list of networks, and rate-limited logging of
//! refusals (a port scan must not flood the log). Connection caps are the
//! supervisor's (`supervisor::admission`).

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ipnet::IpNet;

/// Networks that may connect to TCP listeners.
#[derive(Debug, Clone)]
pub struct AllowList {
    nets: Vec<IpNet>,
}

impl AllowList {
    pub fn new(nets: Vec<IpNet>) -> AllowList {
        AllowList { nets }
    }

    pub fn admits(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// Lets through `burst` events per `window`; counts the rest so that the
/// next allowed line can say how many were suppressed.
pub struct RateLimit {
    state: Mutex<(Instant, u32, u64)>,
    window: Duration,
    burst: u32,
}

impl RateLimit {
    pub fn new(burst: u32, window: Duration) -> RateLimit {
        RateLimit {
            state: Mutex::new((Instant::now(), 0, 0)),
            window,
            burst,
        }
    }

    /// `Some(suppressed_since_last)` if this event may be logged.
    pub fn allow(&self) -> Option<u64> {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if now.duration_since(s.0) >= self.window {
            s.0 = now;
            s.1 = 0;
        }
        if s.1 < self.burst {
            s.1 += 1;
            let suppressed = s.2;
            s.2 = 0;
            Some(suppressed)
        } else {
            s.2 += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matches_v4_and_mapped_v6() {
        let a = AllowList::new(vec![
            "127.0.0.1/32".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        assert!(a.admits("127.0.0.1".parse().unwrap()));
        assert!(!a.admits("127.0.0.2".parse().unwrap()));
        assert!(a.admits("::ffff:127.0.0.1".parse().unwrap()));
        assert!(a.admits("::1".parse().unwrap()));
    }

    #[test]
    fn rate_limit_counts_suppressed() {
        let r = RateLimit::new(2, Duration::from_secs(3600));
        assert_eq!(r.allow(), Some(0));
        assert_eq!(r.allow(), Some(0));
        assert_eq!(r.allow(), None);
        assert_eq!(r.allow(), None);
    }
}
