//! A loaded WATM: compiled once, validated once, instantiated per connection.

use super::driver::{Driver, Generation, Linkers};
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
    /// The WATM v1 export of the role.
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

    pub(crate) const ALL: [Role; 4] =
        [Role::Dialer, Role::FixedDialer, Role::Listener, Role::Relay];
}

/// A compiled, validated WATM ready to be instantiated.
pub struct Watm {
    sha256: [u8; 32],
    module: Module,
    generation: Generation,
    pub(crate) pre: InstancePre<Host>,
    roles: Vec<Role>,
    /// Whether the module exports `_start` (command) or `_initialize` (reactor).
    pub(crate) entry: Option<&'static str>,
}

impl fmt::Debug for Watm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watm")
            .field("sha256", &hex::encode(self.sha256))
            .field("generation", &self.generation)
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

    /// Which generation of the WATER ABI the module speaks.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// Fails with an error naming the missing export unless `role` is supported.
    pub fn require(&self, role: Role) -> Result<(), Error> {
        if self.supports(role) {
            Ok(())
        } else {
            Err(Error::RoleUnsupported {
                role: role.name(),
                // A role the module's generation lacks (v0 has no fixed
                // dialer) is named by its v1 export: only v1 offers it.
                export: self.driver().role_export(role).unwrap_or(role.export()),
            })
        }
    }

    /// The driver of the module's generation.
    pub(crate) fn driver(&self) -> &'static dyn Driver {
        self.generation.driver()
    }

    pub(crate) fn module(&self) -> &Module {
        &self.module
    }

    /// Tells the module's generation, validates its exports and links it
    /// against that generation's linker (the preview1 and `env` host
    /// functions), adding stubs for imports the runtime does not implement.
    pub(crate) fn link(linkers: &Linkers, module: Module, sha256: [u8; 32]) -> Result<Self, Error> {
        for import in module.imports() {
            if !matches!(import.ty(), ExternType::Func(_)) {
                return Err(Error::UnsupportedImport(format!(
                    "{}::{}, which is not a function (a WATM defines its own memory)",
                    import.module(),
                    import.name()
                )));
            }
        }
        let generation = Generation::detect(&module)?;
        let driver = generation.driver();
        let mut stubs = Vec::new();
        for import in module.imports() {
            let (m, n) = (import.module(), import.name());
            let known = (m == wasi::PREVIEW1 && wasi::IMPLEMENTED.contains(&n))
                || (m == host::WATER_MODULE && driver.imports().contains(&n));
            if let ExternType::Func(ty) = import.ty() {
                if !known {
                    stubs.push((m.to_owned(), n.to_owned(), ty));
                }
            }
        }
        let roles = driver.roles(&module)?;
        let entry = ["_initialize", "_start"]
            .into_iter()
            .find(|n| matches!(module.get_export(n), Some(ExternType::Func(_))));

        let mut linker = linkers.get(generation).clone();
        for (m, n, ty) in stubs {
            define_stub(&mut linker, &m, &n, ty)?;
        }
        let pre = linker.instantiate_pre(&module).map_err(|e| {
            Error::UnsupportedImport(format!("a function with an unexpected type ({e:#})"))
        })?;
        Ok(Self {
            sha256,
            module,
            generation,
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
