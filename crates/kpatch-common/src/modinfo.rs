//! The `.modinfo` section of a module (`key=value` strings separated by NULs), and the keys
//! kpatch-rs records in a patch module's (written by kpatch-module's glue, read by the
//! management commands). Finding the section in a file is the caller's: each reads ELF its way.

/// `.modinfo` key: the kernel release the patch was built for (`uname -r` of the target).
pub const MODINFO_KERNEL: &str = "kpatch_rs_kernel";
/// `.modinfo` key: lowercase hex SHA-256 of the source patch the module was built from.
pub const MODINFO_PATCH_SHA256: &str = "kpatch_rs_patch_sha256";
/// `.modinfo` key: the patched functions, comma separated, each `object:function,sympos`
/// (`object` is `vmlinux` or a module name; sympos 0 means the symbol is unique).
pub const MODINFO_FUNCTIONS: &str = "kpatch_rs_functions";
/// `.modinfo` key: the patch's name (`build --name`), shared by the successive cumulative
/// modules of one patch; packages are named after it.
pub const MODINFO_PATCH_NAME: &str = "kpatch_rs_patch_name";
/// `.modinfo` key: the patch's version (`build --patch-version`, default 1): the patch level of
/// its name, and its package's version.
pub const MODINFO_PATCH_VERSION: &str = "kpatch_rs_patch_version";
/// `.modinfo` key: the CVE numbers the patch fixes, comma separated (from its headers and
/// `build --cve`).
pub const MODINFO_CVES: &str = "kpatch_rs_cves";
/// `.modinfo` key: the Debian package version of the target kernel (`6.1.192-3`), when the
/// target is a Debian kernel.
pub const MODINFO_KERNEL_VERSION: &str = "kpatch_rs_kernel_version";
/// `.modinfo` key: `1` when the patch replaces every earlier livepatch (atomic replace), `0`
/// when it stacks on them.
pub const MODINFO_REPLACE: &str = "kpatch_rs_replace";
/// `.modinfo` key the kernel's `MODULE_DESCRIPTION` writes: what the patch does (its subject).
pub const MODINFO_DESCRIPTION: &str = "description";

/// The name of the section.
pub const SECTION: &str = ".modinfo";

/// What `scripts/sign-file` appends last to a signed module (after the signature and its
/// descriptor); the kernel looks for it at the end of the image.
pub const MODULE_SIG_MAGIC: &[u8] = b"~Module signature appended~\n";

/// Whether an (uncompressed) module image carries an appended signature.
pub fn is_signed(image: &[u8]) -> bool {
    image.ends_with(MODULE_SIG_MAGIC)
}

/// One patched function as named by livepatch sysfs (`<object>/<function>,<sympos>`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PatchedFunction {
    pub object: String,
    pub function: String,
    pub sympos: u32,
}

impl PatchedFunction {
    /// Parse `object:function,sympos` (sympos optional, default 0).
    pub fn parse(s: &str) -> Option<Self> {
        let (object, rest) = s.split_once(':')?;
        let (function, sympos) = match rest.split_once(',') {
            Some((f, p)) => (f, p.parse().ok()?),
            None => (rest, 0),
        };
        if object.is_empty() || function.is_empty() {
            return None;
        }
        Some(PatchedFunction {
            object: object.to_string(),
            function: function.to_string(),
            sympos,
        })
    }

    /// The `object:function,sympos` form used in [`MODINFO_FUNCTIONS`].
    pub fn encode(&self) -> String {
        function_item(&self.object, &self.function, self.sympos.into())
    }
}

/// One item of [`MODINFO_FUNCTIONS`]: `object:function,sympos`. The items are joined by `,`.
pub fn function_item(object: &str, function: &str, sympos: u64) -> String {
    format!("{object}:{function},{sympos}")
}

/// The `.modinfo` fields of a module, in file order (keys may repeat, e.g. `alias`, `depends`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ModInfo {
    pub fields: Vec<(String, String)>,
}

impl ModInfo {
    /// Parse the raw bytes of a `.modinfo` section: every non-empty `key=value` string (bytes
    /// that are not UTF-8 replaced); strings without `=` are skipped.
    pub fn from_section(data: &[u8]) -> Self {
        let fields = data
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .filter_map(|s| {
                let s = String::from_utf8_lossy(s);
                let (k, v) = s.split_once('=')?;
                Some((k.to_string(), v.to_string()))
            })
            .collect();
        ModInfo { fields }
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The module name (`name=`), if recorded.
    pub fn name(&self) -> Option<&str> {
        self.get("name")
    }

    /// Every value of `key`, in order.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The modules a `softdep=pre: a b post: c` entry asks to be loaded before this one.
    pub fn softdeps_pre(&self) -> Vec<String> {
        let mut out = Vec::new();
        for v in self.all("softdep") {
            let mut pre = false;
            for w in v.split_whitespace() {
                match w {
                    "pre:" => pre = true,
                    "post:" => pre = false,
                    name if pre => out.push(name.to_string()),
                    _ => {}
                }
            }
        }
        out
    }

    /// The full `vermagic=` string.
    pub fn vermagic(&self) -> Option<&str> {
        self.get("vermagic")
    }

    /// The kernel release the module was built for: the first word of vermagic.
    pub fn vermagic_release(&self) -> Option<&str> {
        self.vermagic().and_then(|v| v.split_whitespace().next())
    }

    /// Whether the module declares itself a livepatch (`livepatch=Y`).
    pub fn is_livepatch(&self) -> bool {
        self.get("livepatch") == Some("Y")
    }

    /// The modules this one needs loaded first (`depends=`, canonical names, empty entries
    /// dropped).
    pub fn depends(&self) -> Vec<String> {
        self.fields
            .iter()
            .filter(|(k, _)| k == "depends")
            .flat_map(|(_, v)| v.split(','))
            .filter(|s| !s.is_empty())
            .map(crate::canonical_module_name)
            .collect()
    }

    /// [`MODINFO_KERNEL`], or the vermagic release when absent.
    pub fn target_kernel(&self) -> Option<&str> {
        self.get(MODINFO_KERNEL).or_else(|| self.vermagic_release())
    }

    /// [`MODINFO_PATCH_SHA256`].
    pub fn patch_sha256(&self) -> Option<&str> {
        self.get(MODINFO_PATCH_SHA256)
    }

    /// [`MODINFO_PATCH_NAME`].
    pub fn patch_name(&self) -> Option<&str> {
        self.get(MODINFO_PATCH_NAME)
    }

    /// [`MODINFO_PATCH_VERSION`], when it is a number.
    pub fn patch_version(&self) -> Option<u32> {
        self.get(MODINFO_PATCH_VERSION)?.parse().ok()
    }

    /// [`MODINFO_DESCRIPTION`].
    pub fn description(&self) -> Option<&str> {
        self.get(MODINFO_DESCRIPTION).filter(|d| !d.is_empty())
    }

    /// The CVE numbers of [`MODINFO_CVES`] (items that are not CVE numbers are skipped).
    pub fn cves(&self) -> Vec<String> {
        self.get(MODINFO_CVES)
            .map(crate::cve::find_cves)
            .unwrap_or_default()
    }

    /// [`MODINFO_REPLACE`], when recorded.
    pub fn replace(&self) -> Option<bool> {
        match self.get(MODINFO_REPLACE)? {
            "1" => Some(true),
            "0" => Some(false),
            _ => None,
        }
    }

    /// [`MODINFO_KERNEL_VERSION`].
    pub fn kernel_version(&self) -> Option<&str> {
        self.get(MODINFO_KERNEL_VERSION).filter(|v| !v.is_empty())
    }

    /// The functions listed in [`MODINFO_FUNCTIONS`] (unparsable items are skipped).
    pub fn functions(&self) -> Vec<PatchedFunction> {
        self.get(MODINFO_FUNCTIONS)
            .map(|v| v.split([' ', ';']).flat_map(split_functions).collect())
            .unwrap_or_default()
    }
}

/// Split `a:f,0,b:g,1` / `a:f,b:g` into items: a comma starts a new item unless followed by digits
/// only (the sympos of the preceding item).
fn split_functions(s: &str) -> Vec<PatchedFunction> {
    let mut out: Vec<PatchedFunction> = Vec::new();
    for piece in s.split(',').filter(|p| !p.is_empty()) {
        if piece.bytes().all(|b| b.is_ascii_digit()) {
            if let (Some(last), Ok(pos)) = (out.last_mut(), piece.parse()) {
                last.sympos = pos;
            }
        } else if let Some(f) = PatchedFunction::parse(piece) {
            out.push(f);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(entries: &[&str]) -> Vec<u8> {
        let mut data = Vec::new();
        for e in entries {
            data.extend_from_slice(e.as_bytes());
            data.push(0);
        }
        data
    }

    #[test]
    fn parses_fields_and_functions() {
        let functions =
            format!("{MODINFO_FUNCTIONS}=vmlinux:cmdline_proc_show,0,ext4:ext4_sync_fs,2");
        let info = ModInfo::from_section(&section(&[
            "license=GPL",
            "livepatch=Y",
            "",
            "no equals sign",
            "vermagic=6.1.0-50-amd64 SMP preempt mod_unload modversions ",
            &functions,
        ]));
        assert_eq!(info.fields.len(), 4);
        assert!(info.is_livepatch());
        assert_eq!(info.vermagic_release(), Some("6.1.0-50-amd64"));
        assert_eq!(info.target_kernel(), Some("6.1.0-50-amd64"));
        let f = info.functions();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].encode(), "vmlinux:cmdline_proc_show,0");
        assert_eq!((f[1].object.as_str(), f[1].sympos), ("ext4", 2));
        // Items without sympos, and separated by spaces or semicolons.
        let info =
            ModInfo::from_section(&section(&[&format!("{MODINFO_FUNCTIONS}=a:f,b:g,3;c:h")]));
        let f: Vec<String> = info
            .functions()
            .iter()
            .map(PatchedFunction::encode)
            .collect();
        assert_eq!(f, ["a:f,0", "b:g,3", "c:h,0"]);
    }

    #[test]
    fn patch_metadata_fields() {
        let info = ModInfo::from_section(&section(&[
            "description=proc: mark /proc/cmdline",
            &format!("{MODINFO_PATCH_NAME}=fleet-fix"),
            &format!("{MODINFO_PATCH_VERSION}=2"),
            &format!("{MODINFO_CVES}=CVE-2099-1002,CVE-2099-1001,not-a-cve"),
            &format!("{MODINFO_KERNEL_VERSION}=6.1.192-3"),
            &format!("{MODINFO_REPLACE}=1"),
        ]));
        assert_eq!(info.replace(), Some(true));
        assert_eq!(info.description(), Some("proc: mark /proc/cmdline"));
        assert_eq!(info.patch_name(), Some("fleet-fix"));
        assert_eq!(info.patch_version(), Some(2));
        assert_eq!(info.cves(), ["CVE-2099-1001", "CVE-2099-1002"]);
        assert_eq!(info.kernel_version(), Some("6.1.192-3"));
        let bare = ModInfo::from_section(&section(&["description=", "kpatch_rs_patch_version=x"]));
        assert_eq!((bare.description(), bare.patch_version()), (None, None));
        assert_eq!(bare.replace(), None);
        assert!(bare.cves().is_empty());
    }

    #[test]
    fn depends_are_canonical_names() {
        let info = ModInfo::from_section(&section(&["depends=mbcache,jbd2,crc-16", "name=ext4"]));
        assert_eq!(info.name(), Some("ext4"));
        assert_eq!(info.depends(), ["mbcache", "jbd2", "crc_16"]);
        assert!(ModInfo::from_section(&section(&["depends="]))
            .depends()
            .is_empty());
    }
}
