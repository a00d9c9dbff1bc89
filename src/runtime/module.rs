//! A loaded WATM: compiled once, validated once, instantiated per connection.

use super::error::Error;
use super::host::{self, Host};
use crate::wasi::{self, Errno};
use sha2::{Digest, Sha256};
use std::fmt;
use wasmtime::{ExternType, FuncType, InstancePre, Linker, Module, Val, ValType};

/// The roles a module can play, each tied to one export.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// `watm_dial_v1`: the runtime picks the remote.
    Dialer,
    /// `watm_dial_fixed_v1`: the module picks the remote.
    FixedDialer,
    /// `watm_accept_v1`: decodes an inbound connection.
    Listener,
    /// `watm_associate_v1`: accepts and dials in one instance.
    Relay,
}

impl Role {
    pub fn export(self) -> &'static str {
        match self {
            Role::Dialer => "watm_dial_v1",
            Role::FixedDialer => "watm_dial_fixed_v1",
            Role::Listener => "watm_accept_v1",
            Role::Relay => "watm_associate_v1",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Dialer => "dialer",
            Role::FixedDialer => "fixed dialer",
            Role::Listener => "listener",
            Role::Relay => "relay",
        }
    }

    const ALL: [Role; 4] = [Role::Dialer, Role::FixedDialer, Role::Listener, Role::Relay];
}

/// A compiled, validated WATM v1 module ready to be instantiated.
pub struct Watm {
    sha256: [u8; 32],
    module: Module,
    pub(crate) pre: InstancePre<Host>,
    roles: Vec<Role>,
    /// Whether the module exports `_start` (command) or `_initialize` (reactor).
    pub(crate) entry: Option<&'static str>,
}

impl fmt::Debug for Watm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watm")
            .field("sha256", &hex::encode(self.sha256))
            .field("roles", &self.roles)
            .finish()
    }
}

impl Watm {
    /// The SHA-256 of the module's bytes (its identity for pins and caches).
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }

    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }

    pub fn supports(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    /// Fails with an error naming the missing export unless `role` is supported.
    pub fn require(&self, role: Role) -> Result<(), Error> {
        if self.supports(role) {
            Ok(())
        } else {
            Err(Error::RoleUnsupported {
                role: role.name(),
                export: role.export(),
            })
        }
    }

    pub(crate) fn module(&self) -> &Module {
        &self.module
    }

    /// Validates `module` and links it against `base` (the preview1 and
    /// `water_*` host functions), adding stubs for imports the runtime does
    /// not implement.
    pub(crate) fn link(
        base: &Linker<Host>,
        module: Module,
        sha256: [u8; 32],
    ) -> Result<Self, Error> {
        let mut stubs = Vec::new();
        for import in module.imports() {
            let (m, n) = (import.module(), import.name());
            let known = (m == wasi::PREVIEW1 && wasi::IMPLEMENTED.contains(&n))
                || (m == host::WATER_MODULE && host::WATER_IMPORTS.contains(&n));
            match import.ty() {
                ExternType::Func(_) if known => {}
                ExternType::Func(ty) => stubs.push((m.to_owned(), n.to_owned(), ty)),
                _ => {
                    return Err(Error::UnsupportedImport(format!(
                        "{m}::{n}, which is not a function (a WATM defines its own memory)"
                    )))
                }
            }
        }
        let exports = |name: &str| module.get_export(name);
        for (name, ty) in REQUIRED {
            check_func(exports(name), name, ty)?.ok_or(Error::MissingExport(name))?;
        }
        match module.get_export("memory") {
            Some(ExternType::Memory(_)) => {}
            _ => return Err(Error::MissingExport("memory")),
        }
        let mut roles = Vec::new();
        for role in Role::ALL {
            let (name, ty) = match role {
                Role::Relay => (role.export(), Sig::NoneToI32),
                _ => (role.export(), Sig::I32ToI32),
            };
            if check_func(exports(name), name, ty)?.is_some() {
                roles.push(role);
            }
        }
        let entry = ["_initialize", "_start"]
            .into_iter()
            .find(|n| matches!(exports(n), Some(ExternType::Func(_))));

        let mut linker = base.clone();
        for (m, n, ty) in stubs {
            define_stub(&mut linker, &m, &n, ty)?;
        }
        let pre = linker.instantiate_pre(&module).map_err(|e| {
            Error::UnsupportedImport(format!("a function with an unexpected type ({e:#})"))
        })?;
        Ok(Self {
            sha256,
            module,
            pre,
            roles,
            entry,
        })
    }
}

/// The SHA-256 of module bytes.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[derive(Copy, Clone)]
enum Sig {
    NoneToI32,
    I32ToI32,
}

impl Sig {
    fn describe(self) -> &'static str {
        match self {
            Sig::NoneToI32 => "func() -> i32",
            Sig::I32ToI32 => "func(i32) -> i32",
        }
    }

    fn matches(self, ty: &FuncType) -> bool {
        let params: Vec<ValType> = ty.params().collect();
        let results: Vec<ValType> = ty.results().collect();
        let want_params = match self {
            Sig::NoneToI32 => 0,
            Sig::I32ToI32 => 1,
        };
        params.len() == want_params
            && params.iter().all(|p| matches!(p, ValType::I32))
            && results.len() == 1
            && matches!(results[0], ValType::I32)
    }
}

const REQUIRED: [(&str, Sig); 3] = [
    ("watm_init_v1", Sig::NoneToI32),
    ("watm_ctrlpipe_v1", Sig::I32ToI32),
    ("watm_start_v1", Sig::NoneToI32),
];

/// `Ok(None)` when absent, `Ok(Some(()))` when present with type `sig`.
fn check_func(ty: Option<ExternType>, name: &'static str, sig: Sig) -> Result<Option<()>, Error> {
    match ty {
        None => Ok(None),
        Some(ExternType::Func(f)) if sig.matches(&f) => Ok(Some(())),
        Some(_) => Err(Error::BadExportType {
            name,
            expected: sig.describe(),
        }),
    }
}

/// Links an import the runtime does not implement. Preview1 functions get
/// `ENOSYS`, `env` functions `-ENOSYS` (the `water_*` convention); anything
/// else traps with its name if the module ever calls it.
fn define_stub(
    linker: &mut Linker<Host>,
    module: &str,
    name: &str,
    ty: FuncType,
) -> Result<(), Error> {
    let single_i32 = ty.results().len() == 1 && matches!(ty.results().next(), Some(ValType::I32));
    let value = if module == wasi::PREVIEW1 {
        Some(Errno::NOSYS.raw())
    } else if module == host::WATER_MODULE {
        Some(Errno::NOSYS.negated())
    } else {
        None
    };
    let label = format!("{module}::{name}");
    linker
        .func_new(module, name, ty, move |_caller, _params, results| {
            match (value, single_i32) {
                (Some(v), true) => {
                    results[0] = Val::I32(v);
                    Ok(())
                }
                _ => Err(wasmtime::Error::msg(format!(
                    "called {label}, which the runtime does not provide"
                ))),
            }
        })
        .map_err(Error::engine)?;
    Ok(())
}
