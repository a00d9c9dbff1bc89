//! The boundary between a session and the generation of the WATER ABI its
//! module speaks.
//!
//! A session owns everything the generations share: the instance and its
//! store, the limits, the stop signal behind the control channel, the forced
//! stop, the thread, the replies on the caller socket. What differs between
//! WATM generations is only which exports are called, in which order, with
//! which host imports beside them, and how the main loop's return value
//! reads. A [`Driver`] holds exactly that, one implementation per
//! generation; the session calls it for the role's setup and for the worker.

use super::error::Error;
use super::host::Host;
use super::module::Role;
use super::session::{Caller, SessionEnd};
use super::{v0, v1};
use wasmtime::{Engine, Linker, Module, Store};

/// Which generation of the WATER ABI a module speaks.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Generation {
    /// `_water_*` exports and `env.host_*` imports; marked by an export
    /// named `_water_v0`.
    V0,
    /// `watm_*_v1` exports and `env.water_*` imports.
    V1,
}

impl Generation {
    /// Tells the generation from the module's exports: `_water_v0` (of any
    /// kind) marks v0, `watm_init_v1` marks v1. The reference runtime picks
    /// at random between the two when a module carries both; here such a
    /// module is refused, as is one that carries neither.
    pub(crate) fn detect(module: &Module) -> Result<Self, Error> {
        let v0 = module.get_export(v0::MARKER).is_some();
        let v1 = module.get_export(v1::MARKER).is_some();
        match (v0, v1) {
            (true, false) => Ok(Generation::V0),
            (false, true) => Ok(Generation::V1),
            (true, true) => Err(Error::Generation(format!(
                "it exports both `{}` (WATM v0) and `{}` (WATM v1)",
                v0::MARKER,
                v1::MARKER
            ))),
            (false, false) => Err(Error::Generation(format!(
                "it exports neither `{}` (WATM v1) nor `{}` (WATM v0)",
                v1::MARKER,
                v0::MARKER
            ))),
        }
    }

    pub(crate) fn driver(self) -> &'static dyn Driver {
        match self {
            Generation::V0 => &v0::V0,
            Generation::V1 => &v1::V1,
        }
    }
}

impl std::fmt::Display for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Generation::V0 => "v0",
            Generation::V1 => "v1",
        })
    }
}

/// How one generation of the ABI is driven through a connection.
pub(crate) trait Driver: Sync {
    /// The host functions of module `env` this generation provides.
    fn imports(&self) -> &'static [&'static str];

    /// Adds those host functions to `linker`.
    fn add_imports(&self, linker: &mut Linker<Host>) -> wasmtime::Result<()>;

    /// Checks the exports every module of this generation needs and returns
    /// the roles this one can play.
    fn roles(&self, module: &Module) -> Result<Vec<Role>, Error>;

    /// The export that plays `role`, or `None` if the generation has no such
    /// role.
    fn role_export(&self, role: Role) -> Option<&'static str>;

    /// The module's init with its config (v1: `watm_init_v1`), alone: a bridge runs it at
    /// start-up to learn whether the module accepts its config ([`super::Runtime::check_init`]).
    fn init(&self, store: &mut Store<Host>) -> Result<(), Error>;

    /// Everything between instantiation and the worker: the module's init,
    /// the role call (with the caller socket lent to the module first, see
    /// [`super::exports::lend_caller`]) and the hand-over of the control
    /// channel.
    fn setup(&self, store: &mut Store<Host>, role: Role, caller: &mut Caller) -> Result<(), Error>;

    /// Runs the module's main loop until the connection ends.
    fn work(&self, store: &mut Store<Host>) -> SessionEnd;
}

/// One linker per generation: WASI preview1 plus that generation's imports.
pub(crate) struct Linkers {
    v0: Linker<Host>,
    v1: Linker<Host>,
}

impl Linkers {
    pub fn new(engine: &Engine) -> wasmtime::Result<Self> {
        let mut base = Linker::new(engine);
        crate::wasi::add_to_linker(&mut base)?;
        let with = |g: Generation| -> wasmtime::Result<Linker<Host>> {
            let mut linker = base.clone();
            g.driver().add_imports(&mut linker)?;
            Ok(linker)
        };
        Ok(Self {
            v0: with(Generation::V0)?,
            v1: with(Generation::V1)?,
        })
    }

    pub fn get(&self, generation: Generation) -> &Linker<Host> {
        match generation {
            Generation::V0 => &self.v0,
            Generation::V1 => &self.v1,
        }
    }
}
