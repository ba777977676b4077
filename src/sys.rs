//! The few C library calls rustix does not offer, behind safe functions:
//! user and group lookups through NSS (`getpwnam_r`, `getpwuid_r`,
//! `getgrnam_r`, `getgrouplist`), `getresuid`/`getresgid` and
//! `getrusage`; the host's interfaces and addresses (`if_nameindex`,
//! `getifaddrs`); and signal names. Everything else goes through rustix.
//!
//! Why `unsafe` lives here, outside the process folders (engine, ipc,
//! sandbox, systemd, supervisor, zygote, worker) that hold the other OS
//! boundaries: these calls are needed by root's configuration and policy
//! code (user and group names), by the sandbox (identities), the launcher
//! and the worker alike, and none of those owns them. So the crate's
//! C-library boundary is this one module: every `unsafe` block is here,
//! each with its `// SAFETY:` comment, and the rest of the crate sees only
//! safe functions.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::io;

/// A passwd entry: what the daemon needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Calls a `get*_r` function with a growing buffer: `call(buf)` returns
/// the function's return code (0, or an errno value) and whether it found
/// an entry.
fn with_buffer<T>(mut call: impl FnMut(&mut [u8]) -> (i32, Option<T>)) -> io::Result<Option<T>> {
    let mut size = 1024usize;
    loop {
        let mut buf = vec![0u8; size];
        match call(&mut buf) {
            (0, found) => return Ok(found),
            (libc::ERANGE, _) if size < 1 << 20 => size *= 4,
            (code, _) => return Err(io::Error::from_raw_os_error(code)),
        }
    }
}

fn user_of(pw: &libc::passwd) -> User {
    // SAFETY: `pw` was filled by getpw*_r, so `pw_name` points to a
    // NUL-terminated string in the buffer that outlives this call.
    let name = unsafe { CStr::from_ptr(pw.pw_name) };
    User {
        name: name.to_string_lossy().into_owned(),
        uid: pw.pw_uid,
        gid: pw.pw_gid,
    }
}

/// A `getpw*_r` call: `lookup(pw, buf, len, result)` returns its code.
type PasswdLookup<'a> =
    &'a dyn Fn(*mut libc::passwd, *mut libc::c_char, usize, *mut *mut libc::passwd) -> i32;

/// Runs a `getpw*_r` lookup with a growing buffer.
fn passwd_entry(lookup: PasswdLookup<'_>) -> io::Result<Option<User>> {
    with_buffer(|buf| {
        // SAFETY: all-zero is a valid `passwd` (null pointers, zero ids).
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = lookup(&mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut result);
        (rc, (rc == 0 && !result.is_null()).then(|| user_of(&pw)))
    })
}

/// The user named `name` (NSS: /etc/passwd, LDAP, systemd-userdb...).
/// rustix makes system calls only and has no NSS lookup.
pub fn user_by_name(name: &str) -> io::Result<Option<User>> {
    let Ok(c_name) = CString::new(name) else {
        return Ok(None);
    };
    passwd_entry(&|pw, buf, len, result| {
        // SAFETY: `c_name` is NUL-terminated; `pw`, `buf` (writable for
        // `len` bytes) and `result` are valid out-pointers from
        // `passwd_entry`.
        unsafe { libc::getpwnam_r(c_name.as_ptr(), pw, buf, len, result) }
    })
}

/// The user with uid `uid`, if it has a passwd entry.
pub fn user_by_uid(uid: u32) -> io::Result<Option<User>> {
    passwd_entry(&|pw, buf, len, result| {
        // SAFETY: `pw`, `buf` (writable for `len` bytes) and `result` are
        // valid out-pointers from `passwd_entry`.
        unsafe { libc::getpwuid_r(uid, pw, buf, len, result) }
    })
}

/// The gid of the group named `name`.
pub fn group_by_name(name: &str) -> io::Result<Option<u32>> {
    let Ok(c_name) = CString::new(name) else {
        return Ok(None);
    };
    with_buffer(|buf| {
        // SAFETY: all-zero is a valid `group` (null pointers, zero gid).
        let mut gr: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: `c_name` is NUL-terminated, `gr` and `result` are valid
        // out-pointers, and `buf` is writable for `buf.len()` bytes.
        let rc = unsafe {
            libc::getgrnam_r(
                c_name.as_ptr(),
                &mut gr,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        (rc, (rc == 0 && !result.is_null()).then_some(gr.gr_gid))
    })
}

/// The groups of user `name` with primary group `gid` (NSS, as `initgroups`
/// would set them).
pub fn group_list(name: &str, gid: u32) -> io::Result<Vec<u32>> {
    let c_name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    for _ in 0..8 {
        let mut n = groups.len() as libc::c_int;
        // SAFETY: `c_name` is NUL-terminated and `groups` is writable for
        // `n` entries; `n` is a valid in/out count.
        let rc = unsafe { libc::getgrouplist(c_name.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        let n = usize::try_from(n).unwrap_or(0);
        if rc >= 0 {
            groups.truncate(n);
            return Ok(groups);
        }
        // Too few slots: `n` now says how many there are.
        groups.resize(n.max(groups.len() * 2).min(65_536), 0);
    }
    Err(io::Error::other(
        "getgrouplist: the group list keeps growing",
    ))
}

/// Real, effective and saved user ids; rustix has no `getresuid`.
pub fn getresuid() -> io::Result<[u32; 3]> {
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: three valid out-pointers.
    if unsafe { libc::getresuid(&mut r, &mut e, &mut s) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok([r, e, s])
}

/// Real, effective and saved group ids; rustix has no `getresgid`.
pub fn getresgid() -> io::Result<[u32; 3]> {
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: three valid out-pointers.
    if unsafe { libc::getresgid(&mut r, &mut e, &mut s) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok([r, e, s])
}

/// User and system CPU time of this process, in microseconds; rustix has
/// no `getrusage`.
pub fn cpu_time_self() -> io::Result<(u64, u64)> {
    // SAFETY: all-zero is a valid `rusage`.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid out-pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Ok((us(ru.ru_utime), us(ru.ru_stime)))
}

/// Whether descriptor number `fd` is open (`fcntl(F_GETFD)`). libc: rustix
/// takes only borrowed descriptors, and borrowing an arbitrary number is
/// what this asks about.
pub fn is_open(fd: std::os::fd::RawFd) -> bool {
    // SAFETY: F_GETFD reads the descriptor's flags and changes nothing;
    // a number that is not open gives EBADF.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// The C library's text for an errno value ("No such file or directory"),
/// without std's " (os error N)" suffix.
pub fn errno_text(code: i32) -> String {
    let full = io::Error::from_raw_os_error(code).to_string();
    let suffix = format!(" (os error {code})");
    full.strip_suffix(&suffix).unwrap_or(&full).to_string()
}

/// The name of a standard signal ("SIGKILL"); rustix's `Signal` has none.
pub fn signal_name(sig: i32) -> Option<&'static str> {
    const NAMES: [(i32, &str); 31] = [
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGQUIT, "SIGQUIT"),
        (libc::SIGILL, "SIGILL"),
        (libc::SIGTRAP, "SIGTRAP"),
        (libc::SIGABRT, "SIGABRT"),
        (libc::SIGBUS, "SIGBUS"),
        (libc::SIGFPE, "SIGFPE"),
        (libc::SIGKILL, "SIGKILL"),
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGSEGV, "SIGSEGV"),
        (libc::SIGUSR2, "SIGUSR2"),
        (libc::SIGPIPE, "SIGPIPE"),
        (libc::SIGALRM, "SIGALRM"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGSTKFLT, "SIGSTKFLT"),
        (libc::SIGCHLD, "SIGCHLD"),
        (libc::SIGCONT, "SIGCONT"),
        (libc::SIGSTOP, "SIGSTOP"),
        (libc::SIGTSTP, "SIGTSTP"),
        (libc::SIGTTIN, "SIGTTIN"),
        (libc::SIGTTOU, "SIGTTOU"),
        (libc::SIGURG, "SIGURG"),
        (libc::SIGXCPU, "SIGXCPU"),
        (libc::SIGXFSZ, "SIGXFSZ"),
        (libc::SIGVTALRM, "SIGVTALRM"),
        (libc::SIGPROF, "SIGPROF"),
        (libc::SIGWINCH, "SIGWINCH"),
        (libc::SIGIO, "SIGIO"),
        (libc::SIGPWR, "SIGPWR"),
        (libc::SIGSYS, "SIGSYS"),
    ];
    NAMES.iter().find(|(n, _)| *n == sig).map(|(_, name)| *name)
}

/// This network namespace's interfaces: their indexes, and the addresses
/// assigned to them. `None` if the C library could not ask the kernel (it
/// needs a netlink descriptor for each list).
// libc: rustix has neither list (glibc asks the kernel by netlink).
pub fn interfaces() -> Option<(Vec<u32>, Vec<std::net::IpAddr>)> {
    let mut indexes = Vec::new();
    // SAFETY: if_nameindex returns an array ended by an entry of index 0,
    // or null; it is read up to that entry and freed once.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return None;
        }
        let mut at = list;
        while (*at).if_index != 0 {
            indexes.push((*at).if_index);
            at = at.add(1);
        }
        libc::if_freenameindex(list);
    }
    let mut addresses = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `list` is a valid out-pointer; on success it heads a linked
    // list freed once below, whose `ifa_addr` is null or points to a
    // sockaddr of the family it names (in or in6 for the two read here).
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return None;
        }
        let mut at = list;
        while !at.is_null() {
            let a = (*at).ifa_addr;
            if !a.is_null() {
                match i32::from((*a).sa_family) {
                    libc::AF_INET => {
                        let v4 = &*a.cast::<libc::sockaddr_in>();
                        addresses.push(std::net::IpAddr::from(v4.sin_addr.s_addr.to_ne_bytes()));
                    }
                    libc::AF_INET6 => {
                        let v6 = &*a.cast::<libc::sockaddr_in6>();
                        addresses.push(std::net::IpAddr::from(v6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            at = (*at).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    Some((indexes, addresses))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_uid_0_and_missing_names_are_none() {
        let root = user_by_name("root").unwrap().expect("root exists");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(user_by_uid(0).unwrap().unwrap().name, "root");
        assert_eq!(group_by_name("root").unwrap(), Some(0));
        assert_eq!(user_by_name("no-such-user-clamsentry").unwrap(), None);
        assert_eq!(group_by_name("no-such-group-clamsentry").unwrap(), None);
        assert!(group_list("root", 0).unwrap().contains(&0));
    }

    #[test]
    fn ids_and_texts() {
        let [_, e, _] = getresuid().unwrap();
        assert_eq!(e, rustix::process::geteuid().as_raw());
        let [_, e, _] = getresgid().unwrap();
        assert_eq!(e, rustix::process::getegid().as_raw());
        assert_eq!(errno_text(libc::ENOENT), "No such file or directory");
        cpu_time_self().unwrap();
        assert_eq!(signal_name(libc::SIGKILL), Some("SIGKILL"));
        assert_eq!(signal_name(64), None);
        assert!(is_open(0) || !is_open(-1));
        assert!(!is_open(-1));
    }

    #[test]
    fn the_host_has_a_loopback_interface_and_address() {
        let (indexes, addresses) = interfaces().unwrap();
        assert!(indexes.contains(&1), "{indexes:?}");
        assert!(
            addresses.contains(&std::net::IpAddr::from([127, 0, 0, 1])),
            "{addresses:?}"
        );
    }
}
