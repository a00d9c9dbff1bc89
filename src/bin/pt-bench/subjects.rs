//! What is benchmarked: direct TCP, water-pt with each usable module, and obfs4proxy; and how
//! each is set up as a client/server transport pair in front of the stand-in ORPort.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use water_pt::{Limits, Role, Runtime, RuntimeConfig};

use crate::launch::{self, ClientPt, Launch, ManagedPt, ServerPt};
use crate::measure::Proc;
use crate::relay;
use crate::route::Route;
use crate::Settings;

/// Modules in the prebuilt directory that exist only to test the runtime (`xor` and `xor-v0`
/// only show that a transforming module survives both ABIs; `plain-v0` is kept as the v0
/// subject beside `plain`). `reference-loop` is a fixture too, but benchmarked: it stands for
/// modules built with the reference TinyGo SDK, whose I/O loop loads the host differently from
/// the Rust SDK's.
const FIXTURES: &[&str] = &["config-echo", "faulty", "xor", "xor-v0", "rot"];

/// A water module to benchmark, with the configuration each side gets (`water-config`).
#[derive(Debug, Clone)]
pub struct WaterModule {
    pub path: PathBuf,
    pub client_config: Option<Vec<u8>>,
    pub server_config: Option<Vec<u8>>,
    /// Where the configuration came from, for the report.
    pub config_from: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum Kind {
    Direct,
    Water(WaterModule),
    Obfs4 {
        program: PathBuf,
    },
    /// Two native `socat` hops in a row: the copying proxy any transport pair has to beat.
    Socat {
        program: PathBuf,
    },
    /// Two native tokio relay hops in a row ([`crate::relay`]): the copying proxy for the
    /// tests a process per connection cannot serve (short connections, idle memory).
    Relay,
    /// The relay chain with a SOCKS5 front as its first hop ([`crate::relay`]): water-pt's
    /// client and server sides with no module in between.
    SocksRelay,
}

#[derive(Debug, Clone)]
pub struct Subject {
    pub name: String,
    pub kind: Kind,
}

impl Subject {
    pub fn label(&self) -> &'static str {
        match self.kind {
            Kind::Direct => "direct TCP, no transport",
            Kind::Water(_) => "water-pt client + server",
            Kind::Obfs4 { .. } => "obfs4proxy client + server (iat-mode=0)",
            Kind::Socat { .. } => "two native socat -b 262144 hops, no transport",
            Kind::Relay => "two native tokio relay hops, no transport",
            Kind::SocksRelay => "the relay chain behind water-pt's SOCKS5 front, no module",
        }
    }

    /// Whether the subject runs `test`. The socat chain forks a process per connection, so it
    /// is a baseline for the bulk tests only; the relay chain is the baseline for the others.
    pub fn runs(&self, test: crate::Test) -> bool {
        match self.kind {
            Kind::Socat { .. } => test == crate::Test::Bulk,
            Kind::Relay | Kind::SocksRelay => test != crate::Test::Bulk,
            _ => true,
        }
    }
}

/// The subjects of this run in report order (direct, the socat and relay chains, water-pt
/// modules with `plain` and `reverse` first, obfs4proxy), plus notes on what was left out and
/// why.
pub fn discover(settings: &Settings) -> (Vec<Subject>, Vec<String>) {
    let mut subjects = vec![Subject {
        name: "direct".into(),
        kind: Kind::Direct,
    }];
    let mut notes = Vec::new();
    match find_program("socat") {
        Some(program) => subjects.push(Subject {
            name: "socat".into(),
            kind: Kind::Socat { program },
        }),
        None => notes.push("socat: not found (apt-get install -y socat)".into()),
    }
    subjects.push(Subject {
        name: "relay".into(),
        kind: Kind::Relay,
    });
    subjects.push(Subject {
        name: "socks-relay".into(),
        kind: Kind::SocksRelay,
    });
    match water_modules(settings, &mut notes) {
        Ok(mods) => subjects.extend(mods),
        Err(e) => notes.push(format!(
            "water-pt modules: cannot list {}: {e}",
            settings.modules.display()
        )),
    }
    match find_program(&settings.obfs4proxy) {
        Some(program) => subjects.push(Subject {
            name: "obfs4".into(),
            kind: Kind::Obfs4 { program },
        }),
        None => notes.push(format!(
            "obfs4: {} not found (apt-get install -y obfs4proxy)",
            settings.obfs4proxy
        )),
    }
    if !settings.only.is_empty() {
        subjects.retain(|s| settings.only.iter().any(|o| o == &s.name));
    }
    (subjects, notes)
}

fn water_modules(settings: &Settings, notes: &mut Vec<String>) -> io::Result<Vec<Subject>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&settings.modules)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    let rank = |p: &PathBuf| match stem(p).as_str() {
        "plain" => 0,
        "reverse" => 1,
        _ => 2,
    };
    paths.sort_by_key(|p| (rank(p), p.clone()));
    // A small runtime only to read each module's exports; the transports load their own.
    let runtime = Runtime::new(RuntimeConfig {
        limits: Limits {
            max_connections: 2,
            ..Limits::default()
        },
        ..RuntimeConfig::default()
    })
    .map_err(|e| io::Error::other(e.to_string()))?;
    let mut out = Vec::new();
    for path in paths {
        let name = stem(&path);
        if FIXTURES.contains(&name.as_str()) {
            notes.push(format!("{name}: a test fixture, skipped"));
            continue;
        }
        let watm = match runtime.load_file(&path) {
            Ok(w) => w,
            Err(e) => {
                notes.push(format!("{name}: not loadable, skipped: {e}"));
                continue;
            }
        };
        if !(watm.supports(Role::Dialer) && watm.supports(Role::Listener)) {
            notes.push(format!(
                "{name}: needs both dialer and listener roles (has {:?}), skipped",
                watm.roles()
            ));
            continue;
        }
        let path = std::fs::canonicalize(&path)?;
        let module = with_config(settings, &name, path)?;
        out.push(Subject {
            name,
            kind: Kind::Water(module),
        });
    }
    Ok(out)
}

/// Finds the configuration of module `name`: `--config NAME=FILE` (both sides), else
/// `NAME.client.json` / `NAME.server.json` or `NAME.json` (both sides) next to the module.
fn with_config(settings: &Settings, name: &str, path: PathBuf) -> io::Result<WaterModule> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
    };
    let flag = settings
        .configs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, f)| f.clone());
    let mut from = Vec::new();
    let (client, server) = if let Some(file) = flag {
        from.push(format!("--config {}", file.display()));
        let bytes = read(&file)?;
        (Some(bytes.clone()), Some(bytes))
    } else {
        let pick = |side: &str, from: &mut Vec<String>| -> io::Result<Option<Vec<u8>>> {
            for candidate in [format!("{name}.{side}.json"), format!("{name}.json")] {
                let p = dir.join(&candidate);
                if p.is_file() {
                    from.push(format!("{side}: {}", p.display()));
                    return read(&p).map(Some);
                }
            }
            Ok(None)
        };
        (pick("client", &mut from)?, pick("server", &mut from)?)
    };
    Ok(WaterModule {
        path,
        client_config: client,
        server_config: server,
        config_from: from,
    })
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// An executable by path, or looked up in `PATH`.
fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).is_file().then(|| PathBuf::from(name));
    }
    std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// A subject set up and ready: the route to the stand-in ORPort and the transport processes
/// (stopped when this is dropped).
#[derive(Debug)]
pub struct Pair {
    pub route: Route,
    pub client: Option<ClientPt>,
    pub server: Option<ServerPt>,
    /// The socat or relay chain's two hops (client side first), when that is the subject.
    pub hops: Vec<ManagedPt>,
    /// Arguments the client sends per connection, for the report.
    pub client_args: Vec<(String, String)>,
}

impl Pair {
    pub fn procs(&self) -> Vec<Proc> {
        let mut v = Vec::new();
        if let Some(c) = &self.client {
            v.push(Proc {
                side: "client",
                pid: c.process.pid(),
            });
        }
        if let Some(s) = &self.server {
            v.push(Proc {
                side: "server",
                pid: s.process.pid(),
            });
        }
        for (side, hop) in ["client", "server"].into_iter().zip(&self.hops) {
            v.push(Proc {
                side,
                pid: hop.pid(),
            });
        }
        v
    }

    /// Whether both transports are still running, with their log tails if not.
    pub fn check_alive(&mut self) -> Result<(), String> {
        let (first, second) = match self.hops.as_mut_slice() {
            [first, second] => (Some(first), Some(second)),
            _ => (None, None),
        };
        for (side, pt) in [
            ("client", self.client.as_mut().map(|c| &mut c.process)),
            ("server", self.server.as_mut().map(|s| &mut s.process)),
            ("first hop", first),
            ("second hop", second),
        ] {
            if let Some(pt) = pt {
                if !pt.is_running() {
                    return Err(format!("the {side} transport exited:\n{}", pt.log_tail()));
                }
            }
        }
        Ok(())
    }
}

/// Starts `subject`'s transports (server first: the client needs its `SMETHOD` arguments).
/// Blocking; call it off the async workers.
pub fn set_up(
    subject: &Subject,
    water_pt: &Path,
    orport: std::net::SocketAddr,
    work: &Path,
) -> io::Result<Pair> {
    let dir = work.join(&subject.name);
    std::fs::create_dir_all(&dir)?;
    let (program, transport, options) = match &subject.kind {
        Kind::Direct => {
            return Ok(Pair {
                route: Route::Direct(orport),
                client: None,
                server: None,
                hops: Vec::new(),
                client_args: Vec::new(),
            })
        }
        Kind::Socat { program } => {
            return chain(|up, log| launch::socat(program, up, log), orport, &dir)
        }
        Kind::Relay => {
            let hop = |up, log: &Path| relay::start_hop(relay::Upstream::Fixed(up), log);
            return chain(hop, orport, &dir);
        }
        Kind::SocksRelay => return socks_chain(orport, &dir),
        Kind::Water(m) => {
            let mut opts = vec![format!(
                "water:water-wasm={}",
                launch::escape_option(&m.path.to_string_lossy())
            )];
            if let Some(c) = &m.server_config {
                opts.push(format!(
                    "water:water-config={}",
                    launch::escape_option(&URL_SAFE_NO_PAD.encode(c))
                ));
            }
            (water_pt.to_path_buf(), "water", Some(opts.join(";")))
        }
        Kind::Obfs4 { program } => (program.clone(), "obfs4", None),
    };
    let server_state = dir.join("server-state");
    let server = launch::server(
        &Launch {
            program: &program,
            transport,
            state_dir: &server_state,
            log: &dir.join("server.log"),
        },
        orport,
        options.as_deref(),
    )?;
    let client = launch::client(&Launch {
        program: &program,
        transport,
        state_dir: &dir.join("client-state"),
        log: &dir.join("client.log"),
    })?;
    let args = match &subject.kind {
        Kind::Water(m) => water_client_args(m, &server.args),
        Kind::Obfs4 { .. } => obfs4_client_args(&server.args, &server_state)?,
        Kind::Direct | Kind::Socat { .. } | Kind::Relay | Kind::SocksRelay => Vec::new(),
    };
    let route = Route::socks(client.socks, &args, server.addr)?;
    Ok(Pair {
        route,
        client: Some(client),
        server: Some(server),
        hops: Vec::new(),
        client_args: args,
    })
}

/// Two copying hops in front of `orport`, each started by `start_hop(upstream, log)`, back to
/// front: each hop needs the address of the next.
fn chain(
    start_hop: impl Fn(SocketAddr, &Path) -> io::Result<(ManagedPt, SocketAddr)>,
    orport: SocketAddr,
    dir: &Path,
) -> io::Result<Pair> {
    let (second, second_addr) = start_hop(orport, &dir.join("second.log"))?;
    let (first, first_addr) = start_hop(second_addr, &dir.join("first.log"))?;
    Ok(Pair {
        route: Route::Direct(first_addr),
        client: None,
        server: None,
        hops: vec![first, second],
        client_args: Vec::new(),
    })
}

/// The SOCKS relay chain: a relay hop in front of `orport` standing for the bridge, and a SOCKS
/// hop in front of it that the benchmark reaches as tor reaches a client transport, with
/// bridge arguments as long as plain's (the handshake reads them).
fn socks_chain(orport: SocketAddr, dir: &Path) -> io::Result<Pair> {
    let (second, second_addr) =
        relay::start_hop(relay::Upstream::Fixed(orport), &dir.join("second.log"))?;
    let (first, first_addr) = relay::start_hop(relay::Upstream::Socks, &dir.join("first.log"))?;
    let args = vec![
        ("water-wasm".to_string(), "plain.wasm".to_string()),
        ("water-sha256".to_string(), "0".repeat(64)),
    ];
    Ok(Pair {
        route: Route::socks(first_addr, &args, second_addr)?,
        client: None,
        server: None,
        hops: vec![first, second],
        client_args: args,
    })
}

/// The bridge line's arguments as a bridge operator would publish them: what the server put
/// in `SMETHOD ... ARGS:` (`water-sha256`, `water-config`), plus `water-wasm` naming the file.
/// A client configuration that differs from the server's replaces `water-config`.
fn water_client_args(m: &WaterModule, smethod: &[(String, String)]) -> Vec<(String, String)> {
    let mut args = vec![(
        "water-wasm".to_string(),
        m.path.to_string_lossy().into_owned(),
    )];
    args.extend(
        smethod
            .iter()
            .filter(|(k, _)| k != "water-config" && k != "water-wasm")
            .cloned(),
    );
    if let Some(c) = &m.client_config {
        args.push(("water-config".into(), URL_SAFE_NO_PAD.encode(c)));
    }
    args
}

/// `cert=...;iat-mode=...` from the `SMETHOD` line, or else from `obfs4_bridgeline.txt` in the
/// server's state directory.
fn obfs4_client_args(
    smethod: &[(String, String)],
    state: &Path,
) -> io::Result<Vec<(String, String)>> {
    let wanted = |k: &str| k == "cert" || k == "iat-mode";
    let args: Vec<_> = smethod.iter().filter(|(k, _)| wanted(k)).cloned().collect();
    if args.iter().any(|(k, _)| k == "cert") {
        return Ok(args);
    }
    let text = std::fs::read_to_string(state.join("obfs4_bridgeline.txt"))?;
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("Bridge obfs4"))
        .ok_or_else(|| io::Error::other("obfs4_bridgeline.txt has no Bridge line"))?;
    let args: Vec<_> = line
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter(|(k, _)| wanted(k))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if args.iter().any(|(k, _)| k == "cert") {
        Ok(args)
    } else {
        Err(io::Error::other("no obfs4 cert in SMETHOD or bridge line"))
    }
}
