//! Running the daemon under a seccomp filter of the test's own, as a
//! service manager or a container would put around it.

use std::process::Command;

/// Installs a seccomp filter that answers EPERM to `seccomp()` and, with
/// `prctl` set, to `prctl(PR_SET_SECCOMP)`, as a service manager's filter
/// that lists neither would (systemd's `@system-service` has `prctl` but
/// not `seccomp`), then runs the command given.
pub fn hidden_seccomp(prctl: bool) -> impl FnOnce(&super::daemons::Launch) -> Command {
    let script = format!(
        r#"
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
prog = [(0x20, 0, 0, 0),                  # A = syscall number
        (0x15, 0, 1, {seccomp}),          # seccomp?
        (0x06, 0, 0, 0x00050000 | 1),     # return EPERM
        (0x15, 0, 3, {prctl}),            # prctl?
        (0x20, 0, 0, 16),                 # A = first argument
        (0x15, 0, 1, 22),                 # PR_SET_SECCOMP?
        (0x06, 0, 0, 0x00050000 | 1),     # return EPERM
        (0x06, 0, 0, 0x7fff0000)]         # allow
code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *f) for f in prog))
class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
fprog = Fprog(len(prog), ctypes.cast(code, ctypes.c_void_p))
ul = ctypes.c_ulong
assert libc.prctl(38, ul(1), ul(0), ul(0), ul(0)) == 0, "no_new_privs"
assert libc.prctl(22, ul(2), ctypes.byref(fprog), ul(0), ul(0)) == 0, "seccomp"
os.execv(sys.argv[1], sys.argv[1:])
"#,
        seccomp = libc::SYS_seccomp,
        // An impossible number when prctl stays allowed.
        prctl = if prctl { libc::SYS_prctl } else { 0xffff },
    );
    move |l| {
        let mut c = Command::new("python3");
        c.arg("-c")
            .arg(script)
            .arg(&l.bin)
            .arg("--config")
            .arg(&l.config);
        c
    }
}
