//! The engine module against the real libclamav with a database built here.

mod common;

use std::io::Write;

use clamsentry::config::Config;
use clamsentry::engine::{Engine, EngineSettings, Verdict};

fn engine() -> Engine {
    let db = common::TestDb::new();
    Engine::load(db.path(), &EngineSettings::from_config(&Config::default())).expect("engine loads")
}

#[test]
fn memory_scan_finds_eicar_and_passes_clean_data() {
    let e = engine();
    assert_eq!(
        e.scan_bytes(&common::eicar(), false),
        Verdict::Found(vec!["Win.Test.EICAR_HDB-1.UNOFFICIAL".into()])
    );
    assert_eq!(e.scan_bytes(b"just some text", false), Verdict::Clean);
    assert_eq!(e.scan_bytes(b"", false), Verdict::Clean);
}

#[test]
fn allmatch_reports_every_signature() {
    let e = engine();
    let data = std::fs::read(common::TESTFILES.to_string() + "/clam.exe").unwrap();
    let Verdict::Found(mut names) = e.scan_bytes(&data, true) else {
        panic!("clam.exe must be detected")
    };
    names.sort();
    assert_eq!(
        names,
        vec![
            "ClamAV-Test-File.UNOFFICIAL".to_string(),
            "Clamsentry.Test.Body-1.UNOFFICIAL".to_string(),
            "Clamsentry.Test.Logical-1.UNOFFICIAL".to_string(),
        ]
    );
}

#[test]
fn fd_scan_matches_memory_scan() {
    let e = engine();
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&common::eicar()).unwrap();
    let fd = std::fs::File::open(f.path()).unwrap();
    let v = e.scan_fd(std::os::fd::AsFd::as_fd(&fd), f.path(), false);
    assert_eq!(v, e.scan_bytes(&common::eicar(), false));
}

#[test]
fn load_failure_names_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let Err(err) = Engine::load(dir.path(), &EngineSettings::from_config(&Config::default()))
    else {
        panic!("an empty directory must not load")
    };
    let msg = err.to_string();
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    std::fs::write(dir.path().join("bad.ndb"), "not a signature\n").unwrap();
    let Err(err) = Engine::load(dir.path(), &EngineSettings::from_config(&Config::default()))
    else {
        panic!("a malformed database must not load")
    };
    let msg = err.to_string();
    assert!(msg.contains("cannot load signatures"), "{msg}");
    assert!(msg.contains("bad.ndb"), "the failing file is named: {msg}");
}

/// Regression: libclamav 1.4 returns CL_CLEAN without scanning when it
/// cannot create the scan's temporary directory; the engine must turn that
/// into an error (found by tests/faults.rs).
#[test]
fn unusable_temporary_directory_is_an_error_not_clean() {
    let db = common::TestDb::new();
    let scratch = tempfile::tempdir().unwrap();
    let mut settings = EngineSettings::from_config(&Config::default());
    settings.temp_dir = Some(scratch.path().join("missing"));
    let e = Engine::load(db.path(), &settings).expect("engine loads");
    let Verdict::Error { message, .. } = e.scan_bytes(&common::eicar(), false) else {
        panic!("a scan that could not run must not be clean");
    };
    assert_eq!(message, "Can't create temporary directory");
    std::fs::create_dir(scratch.path().join("missing")).unwrap();
    assert_eq!(
        e.scan_bytes(&common::eicar(), false),
        Verdict::Found(vec!["Win.Test.EICAR_HDB-1.UNOFFICIAL".into()])
    );
}

/// clamd's ExcludePUA/IncludePUA, CacheSize, DisableCache, DisableCertCheck,
/// BytecodeSecurity/-Mode and the Structured* formats reach libclamav: the
/// engine loads with each of them set, and PUA categories pick signatures.
#[test]
fn pua_categories_and_the_other_clamd_engine_settings_apply() {
    let db = tempfile::tempdir().unwrap();
    let tool = b"a program in the Tool category".to_vec();
    let packer = b"a program in the Packer category".to_vec();
    let md5 = |d: &[u8]| {
        let out = std::process::Command::new("md5sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().unwrap().write_all(d)?;
                c.wait_with_output()
            })
            .unwrap();
        String::from_utf8(out.stdout).unwrap()[..32].to_string()
    };
    std::fs::write(
        db.path().join("pua.hdu"),
        format!(
            "{}:{}:PUA.Win.Tool.Excluded-1\n{}:{}:PUA.Win.Packer.Kept-1\n",
            md5(&tool),
            tool.len(),
            md5(&packer),
            packer.len()
        ),
    )
    .unwrap();
    // An engine needs one signature outside the PUA file to load at all.
    std::fs::write(db.path().join("test.hdb"), common::HDB).unwrap();
    let load = |settings: &str| {
        let c = Config::parse(settings, "test").unwrap();
        Engine::load(db.path(), &EngineSettings::from_config(&c)).expect("engine loads")
    };
    let found = |e: &Engine, d: &[u8]| matches!(e.scan_bytes(d, false), Verdict::Found(_));
    // Without DetectPUA no PUA signature loads.
    let e = load("");
    assert!(!found(&e, &tool) && !found(&e, &packer));
    let e = load("[scan]\ndetect-pua = true\n");
    assert!(found(&e, &tool) && found(&e, &packer));
    let e = load("[scan]\ndetect-pua = true\nexclude-pua = [\"Tool\"]\n");
    assert!(!found(&e, &tool) && found(&e, &packer));
    let e = load("[scan]\ndetect-pua = true\ninclude-pua = [\"Tool\"]\n");
    assert!(found(&e, &tool) && !found(&e, &packer));
    let e = load(
        "[scan]\ncache-size = 100\ndisable-cache = true\ndisable-cert-check = true\n\
         bytecode-security = \"Paranoid\"\nbytecode-mode = \"ForceInterpreter\"\n\
         structured-data-detection = true\nstructured-cc-only = true\n\
         structured-ssn-format-stripped = true\n",
    );
    assert_eq!(e.scan_bytes(b"clean", false), Verdict::Clean);
}
