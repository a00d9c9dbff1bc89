//! How a `water-wasm=REF` bridge argument names the WebAssembly module to run.
//!
//! The value comes from a bridge line, i.e. from whoever distributed the bridge, so it must not be
//! able to point anywhere surprising: it is an absolute path, a `file:` URL, or a bare file name
//! looked up in the local module directory. Network URLs, relative paths with separators and `..`
//! components are refused with an error that says why.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

/// A module named by a bridge argument. Paths held here are always valid UTF-8 (they came from
/// text), absolute, and free of `..` components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleRef {
    /// An absolute path, given directly or as a `file:` URL.
    Path(PathBuf),
    /// A bare file name (no separators, not `.` or `..`) inside the module directory.
    Name(String),
}

/// Why a module reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleRefError {
    /// Nothing was given.
    #[error("module reference is empty")]
    Empty,
    /// A NUL byte, which no file name can contain.
    #[error("module reference {0:?} contains a NUL byte")]
    Nul(String),
    /// A `..` component, which could escape the intended directory.
    #[error("module reference {0:?} contains a '..' component")]
    ParentDir(String),
    /// A URL whose scheme is not `file`.
    #[error(
        "module reference {reference:?} uses the URL scheme {scheme:?}; only file: URLs, absolute paths and bare file names are accepted"
    )]
    UnsupportedScheme {
        /// The whole reference.
        reference: String,
        /// The scheme found.
        scheme: String,
    },
    /// A `file:` URL that is not `file:///absolute/path` (or `file://localhost/...`).
    #[error("module reference {reference:?} is not a usable file: URL: {why}")]
    BadFileUrl {
        /// The whole reference.
        reference: String,
        /// What is wrong with it.
        why: String,
    },
    /// A relative path with separators, or a bare name that is `.` or `..`.
    #[error(
        "module reference {0:?} is a relative path; give an absolute path, a file:/// URL, or a bare file name from the module directory"
    )]
    Relative(String),
}

impl ModuleRef {
    /// Classifies and checks a reference. See the module documentation for the rules.
    pub fn parse(reference: &str) -> Result<Self, ModuleRefError> {
        let owned = || reference.to_owned();
        if reference.is_empty() {
            return Err(ModuleRefError::Empty);
        }
        if reference.contains('\0') {
            return Err(ModuleRefError::Nul(owned()));
        }
        // `..` is checked on the raw text: URL parsing would silently resolve it away, and in the
        // WHATWG rules `%2e` counts as a dot and `\` as a separator for file: URLs.
        if reference.split(['/', '\\']).any(is_dot_dot) {
            return Err(ModuleRefError::ParentDir(owned()));
        }
        // A path from the root: `/...` on Unix; on Windows also `C:\...`, `\\server\share\...`
        // and `\...` (the current drive's root), which must be seen before `C:` reads as a
        // URL scheme.
        if Path::new(reference).has_root() {
            return Self::from_absolute(PathBuf::from(reference), reference);
        }
        if let Some(scheme) = url_scheme(reference) {
            if !scheme.eq_ignore_ascii_case("file") {
                return Err(ModuleRefError::UnsupportedScheme {
                    reference: owned(),
                    scheme: scheme.to_owned(),
                });
            }
            return Self::from_file_url(reference);
        }
        if reference.contains(['/', '\\']) || reference == "." {
            return Err(ModuleRefError::Relative(owned()));
        }
        Ok(ModuleRef::Name(owned()))
    }

    fn from_absolute(path: PathBuf, reference: &str) -> Result<Self, ModuleRefError> {
        // Belt and braces: the raw-text check above already refused these. (`has_root`, not
        // `is_absolute`: the same on Unix, and on Windows it also takes `\x`, rooted on the
        // current drive.)
        if !path.has_root() {
            return Err(ModuleRefError::Relative(reference.to_owned()));
        }
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(ModuleRefError::ParentDir(reference.to_owned()));
        }
        Ok(ModuleRef::Path(path))
    }

    fn from_file_url(reference: &str) -> Result<Self, ModuleRefError> {
        let bad = |why: &str| ModuleRefError::BadFileUrl {
            reference: reference.to_owned(),
            why: why.to_owned(),
        };
        // `file:x.wasm` and `file:/x` parse, but look relative or are unusual; insist on the
        // explicit form.
        let after_scheme = reference.get(5..).unwrap_or("");
        if !after_scheme.starts_with("//") {
            return Err(bad("expected file:///absolute/path"));
        }
        let url = url::Url::parse(reference).map_err(|e| bad(&e.to_string()))?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("a query or fragment is not allowed"));
        }
        match url.host_str() {
            None | Some("") | Some("localhost") => {}
            Some(_) => return Err(bad("only local files (no host, or localhost) are allowed")),
        }
        let path = url
            .to_file_path()
            .map_err(|()| bad("it does not name a local absolute path"))?;
        let text = path
            .to_str()
            .ok_or_else(|| bad("the decoded path is not valid UTF-8"))?;
        if text.contains('\0') {
            return Err(ModuleRefError::Nul(reference.to_owned()));
        }
        if text.ends_with(std::path::is_separator) {
            return Err(bad("it names a directory"));
        }
        Self::from_absolute(path, reference)
    }

    /// The file to load: a path as given, or a bare name inside `module_dir`.
    pub fn resolve(&self, module_dir: &Path) -> PathBuf {
        match self {
            ModuleRef::Path(p) => p.clone(),
            ModuleRef::Name(n) => module_dir.join(n),
        }
    }
}

impl FromStr for ModuleRef {
    type Err = ModuleRefError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The path or the bare name; parsing it again gives the same reference.
impl fmt::Display for ModuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModuleRef::Path(p) => write!(f, "{}", p.display()),
            ModuleRef::Name(n) => f.write_str(n),
        }
    }
}

/// `..` in any spelling the URL parser would also treat as the parent directory.
fn is_dot_dot(segment: &str) -> bool {
    let lower = segment.to_ascii_lowercase();
    matches!(lower.as_str(), ".." | ".%2e" | "%2e." | "%2e%2e")
}

/// The scheme of `s` if it starts like a URL (`ALPHA *(ALPHA / DIGIT / + - .) ":"`).
fn url_scheme(s: &str) -> Option<&str> {
    let (scheme, _) = s.split_once(':')?;
    let mut chars = scheme.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (first_ok && rest_ok).then_some(scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> ModuleRef {
        ModuleRef::Path(PathBuf::from(s))
    }

    #[test]
    fn accepted_forms() {
        for (input, want) in [
            ("/opt/water/a.wasm", path("/opt/water/a.wasm")),
            ("/a/./b.wasm", path("/a/./b.wasm")),
            ("/x", path("/x")),
            ("a.wasm", ModuleRef::Name("a.wasm".into())),
            (".hidden.wasm", ModuleRef::Name(".hidden.wasm".into())),
            ("x..y.wasm", ModuleRef::Name("x..y.wasm".into())),
            ("...", ModuleRef::Name("...".into())),
            ("no_extension", ModuleRef::Name("no_extension".into())),
        ] {
            assert_eq!(ModuleRef::parse(input), Ok(want), "{input}");
        }
    }

    /// A file: URL's path is the platform's: `file:///abs` on Unix, `file:///C:/abs` on
    /// Windows (where a URL without a drive names no file).
    #[cfg(unix)]
    #[test]
    fn accepted_file_urls() {
        for (input, want) in [
            ("file:///abs/x.wasm", "/abs/x.wasm"),
            ("FILE:///abs/x.wasm", "/abs/x.wasm"),
            ("file://localhost/abs/x.wasm", "/abs/x.wasm"),
            ("file:///a%20b/x.wasm", "/a b/x.wasm"),
        ] {
            assert_eq!(ModuleRef::parse(input), Ok(path(want)), "{input}");
        }
        assert!(matches!(
            ModuleRef::parse("file:///a%00b"),
            Err(ModuleRefError::Nul(_))
        ));
    }

    #[cfg(windows)]
    #[test]
    fn accepted_windows_forms() {
        for (input, want) in [
            (r"C:\watm\a.wasm", r"C:\watm\a.wasm"),
            ("C:/watm/a.wasm", "C:/watm/a.wasm"),
            (r"\\server\share\a.wasm", r"\\server\share\a.wasm"),
            ("file:///C:/abs/x.wasm", r"C:\abs\x.wasm"),
            ("file://localhost/C:/a%20b/x.wasm", r"C:\a b\x.wasm"),
        ] {
            assert_eq!(ModuleRef::parse(input), Ok(path(want)), "{input}");
        }
        assert!(matches!(
            ModuleRef::parse(r"C:\a\..\b.wasm"),
            Err(ModuleRefError::ParentDir(_))
        ));
        assert!(matches!(
            ModuleRef::parse("file:///abs/x.wasm"),
            Err(ModuleRefError::BadFileUrl { .. })
        ));
    }

    #[test]
    fn refused_forms() {
        use ModuleRefError as E;
        type Check = fn(&ModuleRefError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, E::Empty)),
            ("a\0.wasm", |e| matches!(e, E::Nul(_))),
            ("/a/../etc/x.wasm", |e| matches!(e, E::ParentDir(_))),
            ("..", |e| matches!(e, E::ParentDir(_))),
            ("../x.wasm", |e| matches!(e, E::ParentDir(_))),
            ("/a/..", |e| matches!(e, E::ParentDir(_))),
            ("file:///a/../b.wasm", |e| matches!(e, E::ParentDir(_))),
            ("file:///a/%2e%2E/b.wasm", |e| matches!(e, E::ParentDir(_))),
            ("file:///a/.%2e/b.wasm", |e| matches!(e, E::ParentDir(_))),
            (r"file:///a\..\b.wasm", |e| matches!(e, E::ParentDir(_))),
            (
                "https://example.com/x.wasm",
                |e| matches!(e, E::UnsupportedScheme { scheme, .. } if scheme == "https"),
            ),
            ("data:application/wasm;base64,AGFzbQ", |e| {
                matches!(e, E::UnsupportedScheme { .. })
            }),
            ("c:x.wasm", |e| matches!(e, E::UnsupportedScheme { .. })),
            ("file:x.wasm", |e| matches!(e, E::BadFileUrl { .. })),
            ("file:/x.wasm", |e| matches!(e, E::BadFileUrl { .. })),
            ("file://host.example/x.wasm", |e| {
                matches!(e, E::BadFileUrl { .. })
            }),
            ("file:///x.wasm?v=1", |e| matches!(e, E::BadFileUrl { .. })),
            ("file:///x.wasm#f", |e| matches!(e, E::BadFileUrl { .. })),
            ("file:///dir/", |e| matches!(e, E::BadFileUrl { .. })),
            ("file:///", |e| matches!(e, E::BadFileUrl { .. })),
            ("file:///%FF.wasm", |e| matches!(e, E::BadFileUrl { .. })),
            ("dir/x.wasm", |e| matches!(e, E::Relative(_))),
            ("./x.wasm", |e| matches!(e, E::Relative(_))),
            (".", |e| matches!(e, E::Relative(_))),
            (r"dir\x.wasm", |e| matches!(e, E::Relative(_))),
        ];
        for (input, check) in cases {
            let err = ModuleRef::parse(input).expect_err(input);
            assert!(check(&err), "{input}: {err:?}");
            if !input.is_empty() {
                let msg = err.to_string();
                assert!(msg.contains(&format!("{input:?}")), "{msg}");
            }
        }
    }

    #[test]
    fn messages_say_why() {
        let e = ModuleRef::parse("https://x/y.wasm")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"https\"") && e.contains("only file:"), "{e}");
        let e = ModuleRef::parse("d/x.wasm").unwrap_err().to_string();
        assert!(e.contains("relative path"), "{e}");
        let e = ModuleRef::parse("/a/../b").unwrap_err().to_string();
        assert!(e.contains("'..'"), "{e}");
    }

    #[test]
    fn resolve() {
        let dir = Path::new("/var/lib/tor/pt_state/water/modules");
        assert_eq!(
            ModuleRef::parse("a.wasm").unwrap().resolve(dir),
            dir.join("a.wasm")
        );
        assert_eq!(
            ModuleRef::parse("/opt/b.wasm").unwrap().resolve(dir),
            PathBuf::from("/opt/b.wasm")
        );
        #[cfg(unix)]
        assert_eq!(
            ModuleRef::parse("file:///opt/c.wasm").unwrap().resolve(dir),
            PathBuf::from("/opt/c.wasm")
        );
    }

    #[test]
    fn display_round_trips() {
        let url = if cfg!(windows) {
            "file:///C:/opt/c.wasm"
        } else {
            "file:///opt/c.wasm"
        };
        for s in ["a.wasm", "/opt/b.wasm", url] {
            let r: ModuleRef = s.parse().unwrap();
            assert_eq!(r.to_string().parse::<ModuleRef>().unwrap(), r);
        }
    }

    #[test]
    fn sweep_never_panics_and_accepted_refs_are_safe() {
        const PIECES: &[&str] = &[
            "/",
            "\\",
            ".",
            "..",
            "%2e",
            "%2F",
            "%00",
            "file:",
            "//",
            "a",
            "é",
            ":",
            "?",
            "#",
            "localhost",
        ];
        let mut seed = 3u64;
        for _ in 0..20_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut x = seed >> 17;
            let n = (x % 6) as usize;
            let mut s = String::new();
            for _ in 0..n {
                s.push_str(PIECES[(x % PIECES.len() as u64) as usize]);
                x /= PIECES.len() as u64;
            }
            if let Ok(r) = ModuleRef::parse(&s) {
                let p = r.resolve(Path::new("/modules"));
                assert!(p.has_root(), "{s:?}");
                assert!(!p.components().any(|c| c == Component::ParentDir), "{s:?}");
                if let ModuleRef::Name(n) = &r {
                    assert_eq!(p.parent(), Some(Path::new("/modules")), "{s:?} -> {n}");
                }
            }
        }
    }
}
