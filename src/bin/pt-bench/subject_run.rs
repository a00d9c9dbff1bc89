//! One subject's run: launch its pair of transports, then its tests in order, each followed
//! by a wait until the stand-in ORPort has seen every connection of the test close.

use std::path::Path;
use std::time::Duration;

use crate::measure::{self, Direction};
use crate::report::{SubjectResult, STREAMS_N};
use crate::subjects::{self, Kind, Subject};
use crate::target::Target;
use crate::{idle, stalled, Settings, Test};

pub async fn run_subject(
    subject: &Subject,
    settings: &Settings,
    target: &Target,
    work: &Path,
) -> SubjectResult {
    let mut r = SubjectResult {
        name: subject.name.clone(),
        label: subject.label().to_string(),
        notes: Vec::new(),
        error: None,
        latency: None,
        cps: None,
        bulk: Vec::new(),
        idle: None,
        stalled: None,
        client_args: Vec::new(),
    };
    match &subject.kind {
        Kind::Water(m) if !m.config_from.is_empty() => {
            r.notes
                .push(format!("module config: {}", m.config_from.join(", ")));
        }
        Kind::Water(_) if subject.name == "reverse" => r.notes.push(
            "reverse transforms each read, so bulk is one-way (sink/source) and echoes are \
             checked by count of identical bytes"
                .into(),
        ),
        _ => {}
    }
    let pair = {
        let (subject, water_pt, orport, work) = (
            subject.clone(),
            settings.water_pt.clone(),
            target.addr,
            work.to_path_buf(),
        );
        tokio::task::spawn_blocking(move || subjects::set_up(&subject, &water_pt, orport, &work))
            .await
    };
    let mut pair = match pair {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            r.error = Some(format!("launch: {e}"));
            return r;
        }
        Err(e) => {
            r.error = Some(format!("launch: {e}"));
            return r;
        }
    };
    r.client_args = pair.client_args.clone();
    let procs = pair.procs();
    if let Err(e) = steps(&mut r, &mut pair, subject, settings, target, &procs).await {
        r.error = Some(e);
    }
    // Stopping may wait for the processes; keep that off the async workers.
    let _ = tokio::task::spawn_blocking(move || drop(pair)).await;
    r
}

/// The tests of one subject, in order. Stops at the first test that shows the pair is broken.
async fn steps(
    r: &mut SubjectResult,
    pair: &mut subjects::Pair,
    subject: &Subject,
    settings: &Settings,
    target: &Target,
    procs: &[measure::Proc],
) -> Result<(), String> {
    let runs = |test| settings.runs(test) && subject.runs(test);
    let route = pair.route.clone();
    let drain = Duration::from_secs(30);
    // Warm-up: water-pt's client loads and compiles the module on its first connection.
    let warm = measure::latency(&route, 20).await;
    if warm.samples == 0 {
        return Err(format!(
            "no connection works: {}",
            warm.first_error.unwrap_or_default()
        ));
    }
    target.drained(drain).await;

    if runs(Test::Latency) {
        eprintln!(
            "   setup latency over {} connections",
            settings.latency_conns
        );
        let lat = measure::latency(&route, settings.latency_conns).await;
        eprintln!(
            "     p50 {:.3} ms, p99 {:.3} ms ({} errors)",
            lat.p50_ms, lat.p99_ms, lat.errors
        );
        r.latency = Some(lat);
        pair.check_alive()?;
        target.drained(drain).await;
    }

    if runs(Test::Idle) && !procs.is_empty() {
        eprintln!("   {} idle connections", settings.idle);
        let idle = idle::idle(&route, target, settings.idle, settings.idle_settle, procs).await;
        for s in &idle.sides {
            eprintln!(
                "     {}: {} KiB/conn ({} -> {} KiB RSS, {} threads, {} maps)",
                s.side,
                format_args!("{:.1}", s.kib_per_conn(idle.opened)),
                s.before.rss_kib,
                s.held.rss_kib,
                s.held.threads,
                s.held.maps
            );
        }
        r.notes.extend(idle::limit_notes(&idle));
        pair.check_alive()?;
        if !target.drained(drain).await {
            r.notes
                .push("idle connections were still closing 30 s after release".into());
        }
        r.notes.extend(idle.settle(procs, drain).await);
        r.idle = Some(idle);
    }

    if runs(Test::Cps) {
        eprintln!(
            "   short connections for {:?} at concurrency {}",
            settings.cps, settings.cps_concurrency
        );
        let cps = measure::cps(
            &route,
            settings.cps_concurrency,
            settings.cps_payload,
            settings.cps,
            procs,
            &[std::process::id(), target.pid()],
        )
        .await;
        eprintln!(
            "     {:.0} conn/s ({} errors){}{}{}",
            cps.per_sec,
            cps.errors,
            cps.cpu_ms_per_conn()
                .map_or(String::new(), |c| format!(", {c:.3} PT CPU ms/conn")),
            cps.load_ms_per_conn()
                .map_or(String::new(), |c| format!(", {c:.3} load CPU ms/conn")),
            cps.machine_busy.map_or(String::new(), |b| format!(
                ", machine {:.0} % busy",
                b * 100.0
            ))
        );
        r.cps = Some(cps);
        pair.check_alive()?;
        target.drained(drain).await;
    }

    for (direction, streams) in [
        (Direction::Up, 1),
        (Direction::Down, 1),
        (Direction::Up, STREAMS_N),
        (Direction::Down, STREAMS_N),
    ]
    .into_iter()
    .filter(|_| runs(Test::Bulk))
    {
        let b = measure::bulk(
            &route,
            target,
            direction,
            streams,
            settings.bulk_warmup,
            settings.bulk,
            procs,
        )
        .await;
        eprintln!(
            "   bulk {} x{streams}: {:.1} MiB/s{}{}",
            direction.name(),
            b.mib_per_s,
            b.cpu_s_per_gib()
                .map_or(String::new(), |c| format!(", {c:.2} PT CPU s/GiB")),
            b.error
                .as_ref()
                .map_or(String::new(), |e| format!(" ({e})"))
        );
        r.bulk.push(b);
        pair.check_alive()?;
        target.drained(drain).await;
    }

    if runs(Test::Stalled) && !procs.is_empty() {
        eprintln!(
            "   {} stalled readers for {:?}",
            settings.stalled, settings.stalled_secs
        );
        let s = stalled::stalled(&route, settings.stalled, settings.stalled_secs, procs).await;
        eprintln!("     {}", s.summary());
        r.stalled = Some(s);
        pair.check_alive()?;
        target.drained(drain).await;
    }
    Ok(())
}
