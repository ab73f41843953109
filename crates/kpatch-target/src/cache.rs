use std::path::PathBuf;

/// The kpatch-rs cache directory: `$KPATCH_RS_CACHE`, else `$XDG_CACHE_HOME/kpatch-rs`,
/// else `~/.cache/kpatch-rs` (`/tmp/kpatch-rs-cache` when there is no `$HOME` at all).
pub fn cache_dir() -> PathBuf {
    cache_dir_from(|k| std::env::var_os(k).map(PathBuf::from))
}

/// [`cache_dir`] with the environment given as a lookup function (empty values count as unset).
pub fn cache_dir_from(env: impl Fn(&str) -> Option<PathBuf>) -> PathBuf {
    let get = |k: &str| env(k).filter(|v| !v.as_os_str().is_empty());
    if let Some(p) = get("KPATCH_RS_CACHE") {
        return p;
    }
    if let Some(p) = get("XDG_CACHE_HOME") {
        return p.join("kpatch-rs");
    }
    match get("HOME") {
        Some(h) => h.join(".cache").join("kpatch-rs"),
        None => PathBuf::from("/tmp/kpatch-rs-cache"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<PathBuf> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).map(PathBuf::from)
    }

    #[test]
    fn explicit_cache_wins_over_xdg_and_home() {
        let env = lookup(&[
            ("KPATCH_RS_CACHE", "/c"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ]);
        assert_eq!(cache_dir_from(env), PathBuf::from("/c"));
    }

    #[test]
    fn xdg_wins_over_home() {
        let env = lookup(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")]);
        assert_eq!(cache_dir_from(env), PathBuf::from("/x/kpatch-rs"));
    }

    #[test]
    fn home_fallback_and_empty_values_are_unset() {
        let env = lookup(&[
            ("KPATCH_RS_CACHE", ""),
            ("XDG_CACHE_HOME", ""),
            ("HOME", "/h"),
        ]);
        assert_eq!(cache_dir_from(env), PathBuf::from("/h/.cache/kpatch-rs"));
    }
}
