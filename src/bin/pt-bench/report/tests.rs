//! The summary tables and target verdicts against made-up results.

use super::*;

const GIB: u64 = 1 << 30;

/// A subject whose single-stream bulk tests moved 1 GiB each way at `up` and `down` MiB/s,
/// costing `cpu` transport CPU seconds per GiB.
pub(crate) fn subject(name: &str, up: f64, down: f64, cpu: Option<f64>) -> SubjectResult {
    let bulk = |direction, mib_per_s| Bulk {
        direction,
        streams: 1,
        secs: 1.0,
        bytes: GIB,
        mib_per_s,
        cpu_secs: cpu,
        error: None,
    };
    SubjectResult {
        name: name.into(),
        label: String::new(),
        notes: Vec::new(),
        error: None,
        latency: None,
        cps: None,
        bulk: vec![bulk(Direction::Up, up), bulk(Direction::Down, down)],
        idle: None,
        stalled: None,
        client_args: Vec::new(),
    }
}

fn verdict<'a>(verdicts: &'a [Verdict], target: &str) -> &'a Verdict {
    verdicts
        .iter()
        .find(|v| v.target.starts_with(target))
        .unwrap_or_else(|| panic!("no verdict {target:?} in {verdicts:#?}"))
}

#[test]
fn issue_16_targets_pass_and_miss() {
    let results = [
        subject("direct", 1500.0, 1000.0, None),
        subject("socat", 600.0, 450.0, Some(1.5)),
        subject("plain", 650.0, 400.0, Some(0.8)),
        subject("shadowsocks", 250.0, 190.0, Some(6.0)),
        subject("obfs4", 100.0, 100.0, Some(11.0)),
    ];
    let v = verdicts(&results, 200, 1.11);
    let pass = |t| verdict(&v, t).pass;
    assert_eq!(pass("shadowsocks single-stream upload >= 2x"), Some(true));
    // 190 MiB/s is 1.9x obfs4proxy's 100.
    assert_eq!(
        pass("shadowsocks single-stream download >= 2x"),
        Some(false)
    );
    assert!(verdict(&v, "shadowsocks single-stream download")
        .measured
        .contains("1.90x of obfs4"));
    // 6.0 / 11.0 = 0.55x.
    assert_eq!(pass("shadowsocks PT CPU s/GiB <= 0.6x"), Some(true));
    assert_eq!(
        pass("plain single-stream upload >= 1.0x the native socat chain"),
        Some(true)
    );
    assert_eq!(
        pass("plain single-stream download >= 1.0x the native socat chain"),
        Some(false)
    );
    // 0.8 / 1.11 = 0.72x.
    assert_eq!(pass("plain PT CPU s/GiB <= 0.8x"), Some(true));
    assert_eq!(
        verdict(&verdicts(&results, 200, 0.9), "plain PT CPU s/GiB").pass,
        Some(false)
    );
    let text = render_verdicts(&v);
    assert!(text.contains("  PASS  shadowsocks PT CPU s/GiB <= 0.6x obfs4proxy"));
    assert!(text.contains("  MISS  shadowsocks single-stream download"));
}

#[test]
fn targets_without_their_baseline_are_not_judged() {
    let results = [
        subject("plain", 650.0, 400.0, None),
        subject("shadowsocks", 250.0, 190.0, Some(6.0)),
    ];
    let v = verdicts(&results, 200, 1.11);
    assert_eq!(verdict(&v, "shadowsocks single-stream upload").pass, None);
    assert_eq!(verdict(&v, "shadowsocks PT CPU").pass, None);
    assert_eq!(verdict(&v, "plain single-stream upload >= 1.0x").pass, None);
    assert_eq!(verdict(&v, "plain PT CPU").pass, None);
    assert!(render_verdicts(&v).contains("n/a   plain PT CPU"));
    // Without shadowsocks there is no line about it at all.
    let v = verdicts(&results[..1], 200, 1.11);
    assert!(v.iter().all(|v| !v.target.starts_with("shadowsocks")));
}

#[test]
fn tables_show_ratios_to_socat() {
    let results = [
        subject("socat", 600.0, 400.0, Some(1.5)),
        subject("plain", 300.0, 400.0, Some(0.75)),
    ];
    let text = render_tables(&results);
    assert!(text.contains("Ratio to socat"));
    let plain_ratio = plain_row(&text, "socat");
    assert!(plain_ratio.contains("0.50x"), "{plain_ratio}");
    assert!(plain_ratio.contains("1.00x"), "{plain_ratio}");
}

/// The short-connection target reports the native and SOCKS relay chains' rates beside
/// plain's, as the ceilings it is measured under, and judges plain's rate alone.
#[test]
fn the_short_connection_target_shows_the_relay_chains_beside_plain() {
    let with_cps = |name, per_sec| {
        let mut r = subject(name, 600.0, 400.0, Some(1.0));
        r.cps = Some(crate::measure::Cps {
            concurrency: 16,
            payload: 1024,
            secs: 5.0,
            completed: (per_sec * 5.0) as u64,
            errors: 0,
            first_error: None,
            per_sec,
            cpu_secs: Some(1.0),
            load_cpu_secs: None,
            machine_busy: None,
            cores: 2,
        });
        r
    };
    let results = [
        with_cps("relay", 5100.0),
        with_cps("socks-relay", 4000.0),
        with_cps("plain", 3000.0),
    ];
    let v = verdicts(&results, 200, 1.11);
    let cps = verdict(&v, ">= 5,000 short connections/s");
    assert_eq!(cps.pass, Some(false));
    assert_eq!(
        cps.measured,
        "3000 conn/s; the native relay chain 5100 conn/s; the SOCKS relay chain 4000 conn/s"
    );
    let text = render_tables(&results);
    let plain_ratio = plain_row(&text, "relay");
    assert!(plain_ratio.contains("0.59x"), "{plain_ratio}");
    let plain_ratio = plain_row(&text, "socks-relay");
    assert!(plain_ratio.contains("0.75x"), "{plain_ratio}");
    // Without the chains the rate stands alone.
    let v = verdicts(&results[2..], 200, 1.11);
    assert_eq!(
        verdict(&v, ">= 5,000 short connections/s").measured,
        "3000 conn/s"
    );
}

/// With the benchmark's own CPU known, the short-connection target also says how much CPU per
/// connection the machine leaves a pair at 5,000 conn/s.
#[test]
fn the_short_connection_target_shows_the_machines_budget_for_a_pair() {
    let mut plain = subject("plain", 600.0, 400.0, Some(1.0));
    plain.cps = Some(crate::measure::Cps {
        concurrency: 16,
        payload: 1024,
        secs: 5.0,
        completed: 16_000,
        errors: 0,
        first_error: None,
        per_sec: 3200.0,
        // 0.4 ms per connection for the pair, 0.2 for the benchmark's side.
        cpu_secs: Some(6.4),
        load_cpu_secs: Some(3.2),
        machine_busy: Some(0.98),
        cores: 2,
    });
    let c = plain.cps.as_ref().unwrap();
    // 2 cores at 5,000 conn/s: 0.4 ms per connection in all, less the benchmark's 0.2.
    let budget = c.pair_budget_ms(5000.0).unwrap();
    assert!((budget - 0.2).abs() < 1e-9, "{budget}");
    let v = verdicts(std::slice::from_ref(&plain), 200, 1.11);
    assert_eq!(
        verdict(&v, ">= 5,000 short connections/s").measured,
        "3200 conn/s; at 5,000 conn/s the 2 cores leave a pair 0.200 CPU ms/conn beside the \
         benchmark's own 0.200 (plain's pair spends 0.400)"
    );
    // Nothing is claimed without the benchmark's own figure, or without a completed connection.
    let mut unknown = c.clone();
    unknown.load_cpu_secs = None;
    assert_eq!(unknown.pair_budget_ms(5000.0), None);
    unknown.load_cpu_secs = Some(3.2);
    unknown.completed = 0;
    assert_eq!(unknown.pair_budget_ms(5000.0), None);
}

/// The `plain` row of the table of ratios to `base`.
fn plain_row<'a>(text: &'a str, base: &str) -> &'a str {
    text.split(&format!("Ratio to {base} "))
        .nth(1)
        .and_then(|t| t.lines().find(|l| l.starts_with("| plain")))
        .unwrap()
}
