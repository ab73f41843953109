//! Fleets, end to end on a real Debian 12 system (systemd as PID 1, made by mmdebstrap from the
//! archive, booted under QEMU TCG with the target Debian kernel and its own initramfs): two
//! versions of a patch built by `kpatch-rs build` (the second cumulative), packaged by
//! `kpatch-rs package`, kpatch-rs itself by `package --tool`, all published by `kpatch-rs repo`
//! as a signed apt repository on a second disk. In two boots of one guest:
//!
//! 1. `apt install` of kpatch-rs and of version 1 loads the patch; `status` reports it with its
//!    description and CVE; the package and the module carry the metadata; then a reboot;
//! 2. the unit loaded it again at boot, before the login prompt (the console log shows when);
//!    `apt install` of version 2 swaps the patches while a probe reads /proc/cmdline without
//!    pause and never sees it unpatched; version 3, whose module the kernel refuses, fails
//!    its postinst (apt says so) and leaves version 2 running; `apt remove` unloads and
//!    uninstalls, and the probe sees it.
//!
//! Gated by KPATCH_RS_GUEST_TESTS=1. Prints the time of each part.

mod guest_support;

use guest_support::{enabled, kp};
use kpatch_guest::debian_system::{TEST_MOUNT, TEST_SCRIPT};
use kpatch_guest::{boot, make_test_disk, DebianSystem, TestScript};
use kpatch_target::DebianKernel;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const PATCH: &str = "fleet-fix";
const KEY: &str = "fleet@kpatch-rs.invalid";

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn kpatch_rs(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kpatch-rs"))
        .args(args)
        .output()
        .expect("running kpatch-rs");
    assert!(
        out.status.success(),
        "kpatch-rs {args:?} failed ({:?}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sh(cmd: &mut Command) {
    let out = cmd.output().expect("running a command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Version 3: version 2's module under another name (same length), with `module_layout`'s CRC
/// changed, so that the kernel refuses it ("disagrees about version of symbol").
fn refused_version(v2: &[u8]) -> Vec<u8> {
    let (from, to) = (b"livepatch_fleet_fix_v2", b"livepatch_fleet_fix_v3");
    let mut out = v2.to_vec();
    let mut i = 0;
    while let Some(at) = out[i..].windows(from.len()).position(|w| w == from) {
        out[i + at..i + at + from.len()].copy_from_slice(to);
        i += at + from.len();
    }
    let name = b"module_layout\0";
    let pos = out
        .windows(name.len())
        .position(|w| w == name)
        .expect("module_layout in __versions");
    for b in &mut out[pos - 8..pos - 4] {
        *b ^= 0xff;
    }
    out
}

/// A shell function that runs apt-get with its output copied to the console and in /tmp/apt.
const APT: &str = "export DEBIAN_FRONTEND=noninteractive\n\
apt_do() { apt-get -q \"$@\" >/tmp/apt 2>&1; krs_apt=$?; echo \"--- apt-get $* (rc $krs_apt)\" >/dev/console; \
cat /tmp/apt >/dev/console; return $krs_apt; }\n\
need() { eval \"$1\" || { echo \"not so: $1\"; return 1; }; }\n\
probe_count() { until krs_c=$(cat /run/probe.count) && [ -n \"$krs_c\" ]; do :; done; echo $krs_c; }\n";

fn first_boot(abi: &str, version: &str) -> TestScript {
    let pkg = format!("livepatch-{PATCH}-{abi}");
    let repo = format!("{TEST_MOUNT}/repo");
    let mut t = TestScript::new();
    t.shell(APT);
    t.check(
        "debian-system",
        &format!(
            "[ \"$(cat /proc/1/comm)\" = systemd ] && [ \"$(uname -r)\" = {abi} ] && grep -q '^VERSION_ID=\"12\"' /etc/os-release \
             && dpkg-query -W -f='${{Version}}' linux-image-{abi} | grep -qx '{version}' \
             && lsinitramfs /boot/initrd.img-{abi} | grep -q 'scripts/local'"
        ),
    );
    t.check(
        "apt-update-signed",
        &format!(
            "rm -f /etc/apt/sources.list && mkdir -p /etc/apt/keyrings && cp {repo}/kpatch-rs-archive-keyring.gpg /etc/apt/keyrings/kpatch-rs.gpg \
             && echo 'deb [signed-by=/etc/apt/keyrings/kpatch-rs.gpg] file:{repo} ./' > /etc/apt/sources.list.d/kpatch-rs.list \
             && apt_do update && grep -q InRelease /tmp/apt && ! grep -qiE 'not signed|NO_PUBKEY|^W:|^E:' /tmp/apt \
             && [ \"$(apt-cache madison {pkg} | wc -l)\" = 3 ]"
        ),
    );
    t.check(
        "apt-install-tool",
        "apt_do install -y kpatch-rs && [ -x /usr/bin/kpatch-rs ] && [ \"$(systemctl is-enabled kpatch-rs.service)\" = enabled ]",
    );
    t.check("status-none", &kp("status", 3));
    t.check(
        "apt-install-v1",
        &format!(
            "apt_do install -y {pkg}=1 && grep -q 'livepatch_fleet_fix_v1: loaded and patched' /tmp/apt \
             && grep -q ' kpatch-rs=live$' /proc/cmdline"
        ),
    );
    t.check(
        "status-v1",
        &format!(
            "{} && grep -q '^state: up to date' /tmp/o && grep -q '^effective patch level: {PATCH} 1$' /tmp/o \
             && grep -q 'livepatch_fleet_fix_v1 \\[enabled, installed for boot\\]' /tmp/o \
             && grep -q 'description: proc: mark /proc/cmdline as live-patched' /tmp/o && grep -q 'CVEs: CVE-2099-1001$' /tmp/o",
            kp("status", 0)
        ),
    );
    t.check(
        "status-json",
        &format!(
            "{} && grep -q '\"state\": \"up-to-date\"' /tmp/o && grep -q '\"exit_code\": 0' /tmp/o",
            kp("status --json", 0)
        ),
    );
    t.check(
        "package-metadata",
        &format!(
            "dpkg-query -W -f='${{Livepatch-Cves}}|${{Depends}}|${{Livepatch-Source-Sha256}}\\n' {pkg} >/tmp/meta && cat /tmp/meta \
             && grep -q '^CVE-2099-1001|linux-image-{abi} (= {version}) | linux-image-{abi}-unsigned (= {version}), kpatch-rs (>= ' /tmp/meta \
             && grep -qE '\\|[0-9a-f]{{64}}$' /tmp/meta"
        ),
    );
    t.check(
        "module-modinfo",
        &format!(
            "m=/usr/lib/kpatch-rs/patches/{abi}/livepatch_fleet_fix_v1.ko; \
             [ \"$(modinfo -F description $m)\" = 'proc: mark /proc/cmdline as live-patched' ] \
             && [ \"$(modinfo -F kpatch_rs_cves $m)\" = CVE-2099-1001 ] && [ \"$(modinfo -F kpatch_rs_patch_version $m)\" = 1 ] \
             && [ \"$(modinfo -F kpatch_rs_patch_sha256 $m)\" = \"$(dpkg-query -W -f='${{Livepatch-Source-Sha256}}' {pkg})\" ]"
        ),
    );
    t
}

fn second_boot(abi: &str) -> TestScript {
    let pkg = format!("livepatch-{PATCH}-{abi}");
    let store = format!("/var/lib/kpatch-rs/{abi}");
    let lp = "/sys/kernel/livepatch";
    let mut t = TestScript::new();
    t.shell(APT);
    t.check(
        "loaded-at-boot",
        &format!(
            "[ \"$(cat {lp}/livepatch_fleet_fix_v1/enabled)\" = 1 ] && grep -q ' kpatch-rs=live$' /proc/cmdline \
             && [ \"$(systemctl is-active kpatch-rs.service)\" = active ] \
             && journalctl -b -u kpatch-rs.service | grep -q 'livepatch_fleet_fix_v1: loaded and patched'"
        ),
    );
    t.check(
        "loaded-before-login",
        "k=$(systemctl show -P ActiveEnterTimestampMonotonic kpatch-rs.service); \
         g=$(systemctl show -P ExecMainStartTimestampMonotonic serial-getty@ttyS0.service); \
         echo \"kpatch-rs.service done at ${k}us, serial getty started at ${g}us (since boot)\"; [ \"$k\" -gt 0 ] && [ \"$k\" -lt \"$g\" ]",
    );
    // The probe: reads /proc/cmdline without pause (a shell builtin, no fork) and writes down
    // each change of what it sees, and how many reads it made.
    t.shell(
        "( krs_last=; krs_n=0; while [ ! -e /run/probe.stop ]; do read -r krs_c </proc/cmdline; \
         case \"$krs_c\" in *' kpatch-rs=live-v2') krs_s=v2;; *' kpatch-rs=live') krs_s=v1;; *) krs_s=none;; esac; \
         krs_n=$((krs_n+1)); echo $krs_n >/run/probe.count; \
         if [ \"$krs_s\" != \"$krs_last\" ]; then echo $krs_s >>/run/probe.states; krs_last=$krs_s; fi; done ) &\n\
         sleep 2",
    );
    t.check(
        "apt-upgrade-v2",
        &format!(
            "a=$(probe_count); apt_do install -y {pkg}=2; r=$?; b=$(probe_count); echo \"probe reads during the upgrade: $((b-a))\"; \
             need '[ $r = 0 ]' && need '[ $((b-a)) -ge 100 ]' \
             && need \"grep -q 'livepatch_fleet_fix_v1: replaced by livepatch_fleet_fix_v2, unloaded and uninstalled' /tmp/apt\" \
             && need '[ \"$(ls {lp})\" = livepatch_fleet_fix_v2 ]' && need \"! grep -q '^livepatch_fleet_fix_v1 ' /proc/modules\" \
             && need \"grep -q ' kpatch-rs=live-v2$' /proc/cmdline\" && need \"grep -q '^kpatch-rs: *live' /proc/meminfo\" \
             && need '[ \"$(ls {store} | tr \"\\\\n\" \" \")\" = \"livepatch_fleet_fix_v2.ko livepatch_fleet_fix_v2.ko.sha256 \" ]'"
        ),
    );
    t.check(
        "never-unpatched",
        "s=$(tr '\\n' ' ' </run/probe.states); echo \"probe saw: $s\"; [ \"$s\" = 'v1 v2 ' ]",
    );
    t.check(
        "status-v2",
        &format!(
            "{} && grep -q '^effective patch level: {PATCH} 2$' /tmp/o && grep -q 'CVEs: CVE-2099-1001, CVE-2099-2001$' /tmp/o",
            kp("status", 0)
        ),
    );
    t.check(
        "apt-upgrade-refused",
        &format!(
            "! apt_do install -y {pkg}=3 && grep -q 'the kernel refused livepatch_fleet_fix_v3' /tmp/apt \
             && grep -q 'the patch that ran before still runs' /tmp/apt \
             && [ \"$(dpkg-query -W -f='${{Status}}' {pkg})\" = 'install ok half-configured' ] \
             && [ \"$(cat {lp}/livepatch_fleet_fix_v2/enabled)\" = 1 ] && [ \"$(ls {lp})\" = livepatch_fleet_fix_v2 ] \
             && [ \"$(ls {store} | tr '\\n' ' ')\" = 'livepatch_fleet_fix_v2.ko livepatch_fleet_fix_v2.ko.sha256 ' ] && [ \"$(tr '\\n' ' ' </run/probe.states)\" = 'v1 v2 ' ]"
        ),
    );
    t.check("status-after-refusal", &kp("status", 0));
    t.check(
        "apt-remove",
        &format!(
            "apt_do remove -y {pkg} && grep -q 'livepatch_fleet_fix_v2: unloaded' /tmp/apt && [ -z \"$(ls {lp})\" ] \
             && ! grep -q '^livepatch_fleet_fix' /proc/modules && ! grep -q 'kpatch-rs=live' /proc/cmdline \
             && [ ! -e {store} ] && sleep 1 && [ \"$(tr '\\n' ' ' </run/probe.states)\" = 'v1 v2 none ' ]"
        ),
    );
    t.shell("touch /run/probe.stop");
    t.check("status-after-remove", &kp("status", 3));
    t.check(
        "dmesg-clean",
        "dmesg | grep -E 'livepatch' >/dev/console; ! dmesg | grep -E 'WARNING:|Call Trace|BUG:|Oops|general protection'",
    );
    t
}

/// The disk's `run.sh`: counts the boots on the root disk and runs the first or second boot's
/// script; the first ends in a reboot, the second in `KPATCH-RS-DONE` and a power-off.
fn run_script() -> String {
    format!(
        "#!/bin/sh\n# Run at every boot by kpatch-rs-test.service.\nexec >/dev/console 2>&1 </dev/null\n\
         export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
         n=$(( $(cat /var/lib/kpatch-rs-test.boots 2>/dev/null || echo 0) + 1 ))\n\
         echo $n >/var/lib/kpatch-rs-test.boots; sync\n\
         echo \"KPATCH-RS-BOOTED boot $n\"\n\
         case $n in\n\
         1) . {TEST_MOUNT}/first-boot.sh; echo KPATCH-RS-REBOOTING; sync; systemctl reboot ;;\n\
         2) . {TEST_MOUNT}/second-boot.sh; echo KPATCH-RS-DONE; sync; systemctl poweroff ;;\n\
         *) echo \"KPATCH-RS-RESULT boots fail booted $n times\"; poweroff -f ;;\n\
         esac\n"
    )
}

/// The console lines of the `n`th boot (1-based): from its `Linux version` line.
fn boot_lines(lines: &[String], n: usize) -> &[String] {
    let starts: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("] Linux version "))
        .map(|(i, _)| i)
        .collect();
    let from = starts.get(n - 1).copied().unwrap_or(lines.len());
    let to = starts.get(n).copied().unwrap_or(lines.len());
    &lines[from..to]
}

#[test]
fn fleet_packages_install_load_survive_a_reboot_upgrade_and_remove_through_apt() {
    if !enabled() {
        return;
    }
    let started = Instant::now();
    let kernel = DebianKernel::default_target().expect("default target");
    let abi = kernel.abi.clone();
    eprintln!("target {abi} ({})", kernel.version);
    let work = tempfile::Builder::new()
        .prefix("kpatch-rs-fleet-")
        .tempdir()
        .unwrap();
    let w = work.path();

    // Two versions of the patch; the second is cumulative and names one more CVE.
    let t = Instant::now();
    let modules = w.join("modules");
    let build = |patch: &str, version: &str, extra: &[&str]| {
        let p = data(patch);
        let mut args = vec![
            "build",
            p.to_str().unwrap(),
            "--kernel",
            &abi,
            "--name",
            PATCH,
            "--patch-version",
            version,
            "-o",
            modules.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        kpatch_rs(&args)
    };
    build("fleet-v1.patch", "1", &[]);
    build("fleet-v2.patch", "2", &["--cve", "CVE-2099-2001"]);
    let v1 = modules.join("livepatch-fleet-fix-v1.ko");
    let v2 = modules.join("livepatch-fleet-fix-v2.ko");
    let v3 = modules.join("livepatch-fleet-fix-v3.ko");
    std::fs::write(&v3, refused_version(&std::fs::read(&v2).unwrap())).unwrap();
    let builds = t.elapsed();

    // The packages and the signed repository.
    let t = Instant::now();
    let debs = w.join("debs");
    let debs_s = debs.to_str().unwrap();
    kpatch_rs(&[
        "package",
        "--tool",
        "--binary",
        env!("CARGO_BIN_EXE_kpatch-rs"),
        "-o",
        debs_s,
    ]);
    kpatch_rs(&[
        "package",
        v1.to_str().unwrap(),
        v2.to_str().unwrap(),
        "-o",
        debs_s,
    ]);
    kpatch_rs(&[
        "package",
        v3.to_str().unwrap(),
        "--version",
        "3",
        "-o",
        debs_s,
    ]);
    let gnupg = w.join("gnupg");
    std::fs::create_dir(&gnupg).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&gnupg, std::fs::Permissions::from_mode(0o700)).unwrap();
    sh(Command::new("gpg")
        .arg("--homedir")
        .arg(&gnupg)
        .args(["--batch", "--passphrase", "", "--quick-gen-key"])
        .args([
            &format!("kpatch-rs fleet test <{KEY}>"),
            "ed25519",
            "sign",
            "never",
        ]));
    let disk = w.join("disk");
    let repo = disk.join("repo");
    let mut args = vec!["repo".to_string(), repo.display().to_string()];
    for e in std::fs::read_dir(&debs).unwrap() {
        args.push(e.unwrap().path().display().to_string());
    }
    args.extend([
        "--sign".into(),
        KEY.into(),
        "--gnupg-home".into(),
        gnupg.display().to_string(),
    ]);
    kpatch_rs(&args.iter().map(String::as_str).collect::<Vec<_>>());
    sh(Command::new("gpgconf")
        .arg("--homedir")
        .arg(&gnupg)
        .args(["--kill", "gpg-agent"]));
    let packaging = t.elapsed();

    // The system (cached after its first build) and the run's disk.
    let t = Instant::now();
    let system = DebianSystem::ensure(&kernel).unwrap_or_else(|e| panic!("{e}"));
    let system_time = t.elapsed();
    let first = first_boot(&abi, &kernel.version);
    let second = second_boot(&abi);
    std::fs::write(disk.join("first-boot.sh"), first.render_steps()).unwrap();
    std::fs::write(disk.join("second-boot.sh"), second.render_steps()).unwrap();
    std::fs::write(disk.join(TEST_SCRIPT), run_script()).unwrap();
    sh(Command::new("chmod").args(["-R", "a+rX"]).arg(&disk));
    let test_img = w.join("test.img");
    make_test_disk(&disk, &test_img).unwrap();

    let mut cfg = system.config(&test_img, Duration::from_secs(900));
    let log = std::env::temp_dir().join("kpatch-rs-fleet.log");
    cfg.log_file = Some(log.clone());
    let run = boot(&cfg).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "fleet: builds {:.0} s, packages and repository {:.1} s, Debian system {:.0} s ({}), \
         two boots {:.0} s, total {:.0} s (console log: {})",
        builds.as_secs_f64(),
        packaging.as_secs_f64(),
        system_time.as_secs_f64(),
        match system.built_in {
            Some(s) => format!("built in {s:.0} s"),
            None => "cached".into(),
        },
        run.elapsed.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        log.display()
    );
    run.verdict(&first)
        .unwrap_or_else(|e| panic!("first boot: {e}"));
    run.verdict(&second)
        .unwrap_or_else(|e| panic!("second boot: {e}"));

    // The second boot's console: the kernel's livepatch messages and the unit's end come
    // before the login prompt.
    let boot2 = boot_lines(&run.lines, 2);
    assert!(
        boot_lines(&run.lines, 3).is_empty(),
        "booted more than twice"
    );
    let find = |what: &dyn Fn(&str) -> bool| boot2.iter().position(|l| what(l));
    let enabled = find(&|l| l.contains("livepatch: enabling patch 'livepatch_fleet_fix_v1'"))
        .expect("the kernel's 'enabling patch' line in the second boot");
    let complete = find(&|l| l.contains("'livepatch_fleet_fix_v1': patching complete"))
        .expect("the kernel's 'patching complete' line in the second boot");
    let unit = find(&|l| l.contains("Finished") && l.contains("kpatch-rs.service"))
        .expect("systemd's line for kpatch-rs.service in the second boot");
    let login = find(&|l| l.contains("Debian GNU/Linux 12 kpatch-rs-guest ttyS0"))
        .expect("the login prompt in the second boot");
    for i in [enabled, complete, unit] {
        eprintln!("second boot: {}", boot2[i]);
    }
    eprintln!("second boot: {}", boot2[login]);
    assert!(
        enabled < complete && complete < login && unit < login,
        "lines {enabled}, {complete}, {unit} should come before the login prompt at {login}"
    );
}
