//! The package of one livepatch module: `livepatch-<patch>-<kernel ABI>`, version the patch's
//! version, depending on that exact kernel package (signed or unsigned) and on kpatch-rs. It
//! ships the module under [`PATCH_DIR`]; its maintainer scripts hand the dpkg protocol to
//! `kpatch-rs maintscript`, which installs it for boot, loads it when its kernel runs (a newer
//! version taking over from an older one before the older one is removed), and unloads and
//! uninstalls it on removal. Its description, CVE numbers and source checksum come from the
//! module's `.modinfo` and go into the control file.

use crate::control::{name_part, one_line};
use crate::{Control, Deb, DebError};
use kpatch_common::modinfo::ModInfo;
use std::path::Path;

/// Where patch packages put their modules: `<PATCH_DIR>/<kernel>/<module>.ko`.
pub const PATCH_DIR: &str = "/usr/lib/kpatch-rs/patches";

/// The kpatch-rs subcommand the maintainer scripts run.
pub const MAINTSCRIPT_COMMAND: &str = "kpatch-rs maintscript";

/// What the module does not say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchPackageOptions {
    /// The package version (default: the module's patch version, else 1).
    pub version: Option<String>,
    pub maintainer: String,
    /// The kpatch-rs version the maintainer scripts need at least.
    pub tool_version: String,
}

/// What the package says about its module, read from the module's `.modinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchInfo {
    pub module: String,
    pub kernel: String,
    /// The Debian version of the kernel package, when the build recorded it.
    pub kernel_version: Option<String>,
    pub patch: String,
    pub version: String,
    pub description: Option<String>,
    pub cves: Vec<String>,
    pub sha256: Option<String>,
    pub functions: Vec<String>,
}

impl PatchInfo {
    /// Reads the module's metadata; `module_path` names it in errors and gives the module name
    /// when `.modinfo` has none.
    pub fn from_modinfo(module_path: &Path, info: &ModInfo) -> Result<Self, DebError> {
        if !info.is_livepatch() {
            return Err(DebError::NotLivepatch {
                path: module_path.to_path_buf(),
            });
        }
        let module = info
            .name()
            .map(str::to_string)
            .or_else(|| kpatch_common::names::module_name_from_path(module_path))
            .unwrap_or_default();
        let kernel = info
            .target_kernel()
            .ok_or_else(|| DebError::NoKernel {
                path: module_path.to_path_buf(),
            })?
            .to_string();
        let patch = info.patch_name().map(str::to_string).unwrap_or_else(|| {
            let m = module.as_str();
            m.strip_prefix("livepatch_").unwrap_or(m).to_string()
        });
        Ok(PatchInfo {
            module,
            kernel,
            kernel_version: info.kernel_version().map(str::to_string),
            patch,
            version: info.patch_version().unwrap_or(1).to_string(),
            description: info.description().map(one_line),
            cves: info.cves(),
            sha256: info.patch_sha256().map(str::to_string),
            functions: info.functions().iter().map(|f| f.encode()).collect(),
        })
    }

    /// `livepatch-<patch>-<kernel>`.
    pub fn package_name(&self) -> String {
        format!(
            "livepatch-{}-{}",
            name_part(&self.patch),
            name_part(&self.kernel)
        )
    }

    /// Where the package installs the module (`ext`: `.ko`, `.ko.xz`, ...).
    pub fn module_path(&self, ext: &str) -> String {
        format!("{PATCH_DIR}/{}/{}{ext}", self.kernel, self.module)
    }
}

/// The package of the module at `module_path` (its bytes are read from there).
pub fn patch_package(
    module_path: &Path,
    info: &ModInfo,
    opts: &PatchPackageOptions,
) -> Result<Deb, DebError> {
    let p = PatchInfo::from_modinfo(module_path, info)?;
    let data = std::fs::read(module_path).map_err(|e| DebError::io(module_path, e))?;
    let file_name = module_path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = file_name.find(".ko").map_or(".ko", |i| &file_name[i..]);
    let installed = p.module_path(ext);
    let version = opts.version.clone().unwrap_or_else(|| p.version.clone());
    let mut c = Control::new(&p.package_name(), &version, "amd64", &opts.maintainer)?;
    c.set("Section", "kernel")?;
    c.set("Priority", "optional")?;
    c.set("Depends", &depends(&p, &opts.tool_version))?;
    c.set_description(
        &format!("live patch {} for Linux {}", p.patch, p.kernel),
        &long_description(&p, &installed),
    )?;
    c.set("Livepatch-Module", &p.module)?;
    c.set("Livepatch-Kernel", &p.kernel)?;
    c.set("Livepatch-Name", &p.patch)?;
    if !p.cves.is_empty() {
        c.set("Livepatch-Cves", &p.cves.join(", "))?;
    }
    if let Some(sha) = &p.sha256 {
        c.set("Livepatch-Source-Sha256", sha)?;
    }
    let mut deb = Deb::new(c);
    deb.file(&installed, data, 0o644);
    deb.script("postinst", maintainer_script("postinst", &p, &installed));
    deb.script("prerm", maintainer_script("prerm", &p, &installed));
    Ok(deb)
}

/// The kernel package under both its names (signed and unsigned images are the same kernel),
/// at the exact version when known, and kpatch-rs.
fn depends(p: &PatchInfo, tool_version: &str) -> String {
    let pin = p
        .kernel_version
        .as_ref()
        .map(|v| format!(" (= {v})"))
        .unwrap_or_default();
    format!(
        "linux-image-{k}{pin} | linux-image-{k}-unsigned{pin}, kpatch-rs (>= {tool_version})",
        k = p.kernel
    )
}

fn long_description(p: &PatchInfo, installed: &str) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(d) = &p.description {
        lines.push(d.clone());
        lines.push(String::new());
    }
    if !p.cves.is_empty() {
        lines.push(format!("Fixes: {}", p.cves.join(", ")));
    }
    lines.push(format!("Module: {} ({installed})", p.module));
    if let Some(sha) = &p.sha256 {
        lines.push(format!("Source patch SHA-256: {sha}"));
    }
    if !p.functions.is_empty() {
        lines.push(format!("Patched functions: {}", p.functions.join(", ")));
    }
    lines.push(String::new());
    lines.push(format!(
        "Installed, the patch is loaded when Linux {} runs, now and at every boot \
         (kpatch-rs.service); `kpatch-rs status` reports it.",
        p.kernel
    ));
    lines
}

/// `postinst` or `prerm`: the dpkg arguments go to `kpatch-rs maintscript`.
fn maintainer_script(script: &str, p: &PatchInfo, installed: &str) -> String {
    let what = match script {
        "postinst" => format!(
            "installs {} for boot with Linux {} and, when that kernel runs, loads it;\n\
             # a newer version takes over from an older one before the older one is removed.",
            p.module, p.kernel
        ),
        _ => format!(
            "on removal, unloads and uninstalls every version of patch {};\n\
             # on upgrade, leaves the running version to the new package's postinst.",
            p.patch
        ),
    };
    let guard = if script == "prerm" {
        "if ! command -v kpatch-rs >/dev/null; then\n    \
         echo \"kpatch-rs is not installed: $0 leaves the patch as it is\" >&2\n    exit 0\nfi\n"
    } else {
        ""
    };
    format!(
        "#!/bin/sh\n# {script} of {package}, written by kpatch-rs package: {what}\nset -e\n\
         {guard}exec {MAINTSCRIPT_COMMAND} {script} {installed} \"$@\"\n",
        package = p.package_name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpatch_common::modinfo::{
        MODINFO_CVES, MODINFO_FUNCTIONS, MODINFO_KERNEL, MODINFO_KERNEL_VERSION,
        MODINFO_PATCH_NAME, MODINFO_PATCH_SHA256, MODINFO_PATCH_VERSION,
    };

    fn modinfo(fields: &[(&str, &str)]) -> ModInfo {
        ModInfo {
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn opts() -> PatchPackageOptions {
        PatchPackageOptions {
            version: None,
            maintainer: "Ops <ops@example.org>".into(),
            tool_version: "0.1.0".into(),
        }
    }

    fn full() -> ModInfo {
        modinfo(&[
            ("name", "livepatch_fleet_fix_v2"),
            ("livepatch", "Y"),
            (
                "vermagic",
                "6.1.0-57-amd64 SMP preempt mod_unload modversions ",
            ),
            (MODINFO_KERNEL, "6.1.0-57-amd64"),
            (MODINFO_KERNEL_VERSION, "6.1.192-3"),
            (MODINFO_PATCH_NAME, "fleet_fix"),
            (MODINFO_PATCH_VERSION, "2"),
            ("description", "proc: cumulative fix"),
            (MODINFO_CVES, "CVE-2099-1001,CVE-2099-2001"),
            (MODINFO_PATCH_SHA256, "ab12"),
            (MODINFO_FUNCTIONS, "vmlinux:cmdline_proc_show,0"),
        ])
    }

    #[test]
    fn the_package_says_the_patch_the_kernel_and_the_cves() {
        let dir = tempfile::tempdir().unwrap();
        let ko = dir.path().join("livepatch-fleet-fix-v2.ko");
        std::fs::write(&ko, b"module bytes").unwrap();
        let deb = patch_package(&ko, &full(), &opts()).unwrap();
        let c = &deb.control;
        assert_eq!(c.get("Package"), Some("livepatch-fleet-fix-6.1.0-57-amd64"));
        assert_eq!(c.get("Version"), Some("2"));
        assert_eq!(
            c.get("Depends"),
            Some(
                "linux-image-6.1.0-57-amd64 (= 6.1.192-3) | linux-image-6.1.0-57-amd64-unsigned \
                 (= 6.1.192-3), kpatch-rs (>= 0.1.0)"
            )
        );
        assert_eq!(
            c.get("Livepatch-Cves"),
            Some("CVE-2099-1001, CVE-2099-2001")
        );
        assert_eq!(c.get("Livepatch-Source-Sha256"), Some("ab12"));
        let desc = c.get("Description").unwrap();
        assert!(desc.starts_with("live patch fleet_fix for Linux 6.1.0-57-amd64\n proc: cumulative fix\n .\n Fixes: CVE-2099-1001, CVE-2099-2001\n"), "{desc}");
        let path = "/usr/lib/kpatch-rs/patches/6.1.0-57-amd64/livepatch_fleet_fix_v2.ko";
        assert_eq!(deb.files[0].path, path);
        assert_eq!(deb.files[0].data, b"module bytes");
        let (name, postinst) = &deb.scripts[0];
        assert_eq!(name, "postinst");
        assert!(
            postinst.ends_with(&format!(
                "exec kpatch-rs maintscript postinst {path} \"$@\"\n"
            )),
            "{postinst}"
        );
        let (_, prerm) = &deb.scripts[1];
        assert!(
            prerm.contains("command -v kpatch-rs") && prerm.contains("maintscript prerm"),
            "{prerm}"
        );
        assert_eq!(
            deb.file_name(),
            "livepatch-fleet-fix-6.1.0-57-amd64_2_amd64.deb"
        );
        // --version wins.
        let o = PatchPackageOptions {
            version: Some("2+rebuild1".into()),
            ..opts()
        };
        assert_eq!(
            patch_package(&ko, &full(), &o)
                .unwrap()
                .control
                .get("Version"),
            Some("2+rebuild1")
        );
    }

    #[test]
    fn a_module_without_metadata_still_packages() {
        let dir = tempfile::tempdir().unwrap();
        let ko = dir.path().join("livepatch-old.ko.xz");
        std::fs::write(&ko, b"x").unwrap();
        let info = modinfo(&[("livepatch", "Y"), ("vermagic", "6.1.0-57-amd64 SMP ")]);
        let deb = patch_package(&ko, &info, &opts()).unwrap();
        assert_eq!(
            deb.control.get("Package"),
            Some("livepatch-old-6.1.0-57-amd64")
        );
        assert_eq!(deb.control.get("Version"), Some("1"));
        assert!(deb
            .control
            .get("Depends")
            .unwrap()
            .starts_with("linux-image-6.1.0-57-amd64 | "));
        assert!(deb.files[0]
            .path
            .ends_with("/6.1.0-57-amd64/livepatch_old.ko.xz"));
        assert!(deb.control.get("Livepatch-Cves").is_none());
        let e = patch_package(&ko, &modinfo(&[("vermagic", "x ")]), &opts()).unwrap_err();
        assert!(matches!(e, DebError::NotLivepatch { .. }), "{e}");
        let e = patch_package(&ko, &modinfo(&[("livepatch", "Y")]), &opts()).unwrap_err();
        assert!(matches!(e, DebError::NoKernel { .. }), "{e}");
    }
}
