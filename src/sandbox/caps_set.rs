//! Capabilities: clearing them in the worker, trimming them in the supervisor.

use caps::{CapSet, Capability, CapsHashSet};

use super::SandboxError;

/// The five capability masks of the calling thread, from `/proc/self/status`
/// (the kernel's view, including capabilities newer than the `caps` crate).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Masks {
    pub inh: u64,
    pub prm: u64,
    pub eff: u64,
    pub bnd: u64,
    pub amb: u64,
}

pub(super) fn read_masks() -> Result<Masks, SandboxError> {
    let status = std::fs::read_to_string("/proc/thread-self/status")
        .map_err(|e| SandboxError::step("reading /proc/thread-self/status", e))?;
    let mut m = Masks::default();
    for line in status.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "CapInh" => &mut m.inh,
            "CapPrm" => &mut m.prm,
            "CapEff" => &mut m.eff,
            "CapBnd" => &mut m.bnd,
            "CapAmb" => &mut m.amb,
            _ => continue,
        };
        *slot = u64::from_str_radix(value.trim(), 16)
            .map_err(|e| SandboxError::step("parsing /proc/thread-self/status", e))?;
    }
    Ok(m)
}

fn mask_of(set: &CapsHashSet) -> u64 {
    set.iter().fold(0, |m, c| m | c.bitmask())
}

fn holds_setpcap() -> Result<bool, SandboxError> {
    caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP)
        .map_err(|e| SandboxError::step("reading capabilities", e))
}

/// Drops every capability from the bounding set if we may (`CAP_SETPCAP`).
/// Returns whether the bounding set is now empty.
pub(super) fn drop_bounding_set() -> Result<bool, SandboxError> {
    if !holds_setpcap()? {
        return Ok(read_masks()?.bnd == 0);
    }
    caps::clear(None, CapSet::Bounding)
        .map_err(|e| SandboxError::step("dropping the capability bounding set", e))?;
    let bnd = read_masks()?.bnd;
    if bnd != 0 {
        return Err(SandboxError::verify(
            "dropping the capability bounding set",
            format!("CapBnd is {bnd:016x} (a capability unknown to the caps crate?)"),
        ));
    }
    Ok(true)
}

/// Clears the effective, permitted, inheritable and ambient sets; verifies
/// them (and the bounding set when it was dropped) from the kernel's view.
pub(super) fn clear_all(bounding_cleared: bool) -> Result<(), SandboxError> {
    const STEP: &str = "clearing capabilities";
    caps::clear(None, CapSet::Ambient).map_err(|e| SandboxError::step(STEP, e))?;
    caps::clear(None, CapSet::Inheritable).map_err(|e| SandboxError::step(STEP, e))?;
    // Effective must go before (or with) permitted: capset refuses an
    // effective set that is not a subset of the permitted one.
    caps::clear(None, CapSet::Effective).map_err(|e| SandboxError::step(STEP, e))?;
    caps::clear(None, CapSet::Permitted).map_err(|e| SandboxError::step(STEP, e))?;
    let m = read_masks()?;
    if m.inh | m.prm | m.eff | m.amb != 0 || (bounding_cleared && m.bnd != 0) {
        return Err(SandboxError::verify(STEP, format!("{m:?}")));
    }
    Ok(())
}

/// For the supervisor: keep only `keep` in the permitted and effective sets
/// and in the bounding set; clear inheritable and ambient. The bounding set
/// is trimmed only when the process holds `CAP_SETPCAP` (put it in `keep` to
/// let a re-executed worker clear its own bounding set). A process with no
/// capabilities at all (not root) has nothing to do: `Ok`.
pub fn restrict_supervisor(keep: &[Capability]) -> Result<(), SandboxError> {
    const STEP: &str = "restricting the supervisor's capabilities";
    let before = read_masks()?;
    if before.prm == 0 && before.eff == 0 && before.amb == 0 && before.inh == 0 {
        return Ok(());
    }
    let keep: CapsHashSet = keep.iter().copied().collect();
    let trims_bounding = holds_setpcap()?;
    if trims_bounding {
        for cap in caps::all() {
            if !keep.contains(&cap)
                && caps::has_cap(None, CapSet::Bounding, cap)
                    .map_err(|e| SandboxError::step(STEP, e))?
            {
                caps::drop(None, CapSet::Bounding, cap).map_err(|e| SandboxError::step(STEP, e))?;
            }
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| SandboxError::step(STEP, e))?;
    caps::clear(None, CapSet::Inheritable).map_err(|e| SandboxError::step(STEP, e))?;
    let permitted = caps::read(None, CapSet::Permitted).map_err(|e| SandboxError::step(STEP, e))?;
    let kept: CapsHashSet = permitted.intersection(&keep).copied().collect();
    caps::set(None, CapSet::Effective, &kept).map_err(|e| SandboxError::step(STEP, e))?;
    caps::set(None, CapSet::Permitted, &kept).map_err(|e| SandboxError::step(STEP, e))?;

    let m = read_masks()?;
    let want = mask_of(&kept);
    let keep_mask = mask_of(&keep);
    if m.eff != want || m.prm != want || m.inh != 0 || m.amb != 0 {
        return Err(SandboxError::verify(
            STEP,
            format!("{m:?}, expected eff=prm={want:x}"),
        ));
    }
    if trims_bounding && m.bnd & !keep_mask != 0 {
        return Err(SandboxError::verify(
            STEP,
            format!(
                "bounding set {:016x} holds more than {keep_mask:016x}",
                m.bnd
            ),
        ));
    }
    Ok(())
}
