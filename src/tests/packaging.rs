//! The systemd unit in `packaging/`: the settings the code and the README count on.

use crate::web::listener::ListenerLimits;

const UNIT: &str = include_str!("../../packaging/mediabot.service");

/// `key=value` lines of one `[section]` of the unit, in order.
fn section(name: &str) -> Vec<(&'static str, &'static str)> {
    let mut current = "";
    let mut out = Vec::new();
    for line in UNIT.lines().map(str::trim) {
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = s;
        } else if current == name && !line.starts_with('#') {
            if let Some((k, v)) = line.split_once('=') {
                out.push((k.trim(), v.trim()));
            }
        }
    }
    out
}

fn number(section_name: &str, key: &str) -> u64 {
    let v = section(section_name).into_iter().find(|(k, _)| *k == key).map(|(_, v)| v);
    let v = v.unwrap_or_else(|| panic!("[{section_name}] has no {key}="));
    v.trim_end_matches('s').parse().unwrap_or_else(|_| panic!("{key}={v} is not a number of seconds"))
}

#[test]
fn a_broken_install_stops_restarting() {
    // systemd reads the start limit from [Unit]; in [Service] it is ignored with a warning.
    let interval = number("Unit", "StartLimitIntervalSec");
    let burst = number("Unit", "StartLimitBurst");
    let restart_sec = number("Service", "RestartSec");
    assert!(burst >= 2, "one failed start must not give up");
    // A process failing at once restarts every RestartSec: `burst` starts must fall inside the
    // interval, or the limit never trips and it loops forever.
    assert!((burst - 1) * restart_sec < interval, "burst {burst} × {restart_sec} s does not fit in {interval} s");
}

#[test]
fn enough_file_descriptors_for_the_connection_cap() {
    let nofile = number("Service", "LimitNOFILE");
    let cap = ListenerLimits::default().max_connections as u64;
    // Besides the connections: the database, media files being written or sent, provider and
    // Bot API connections, the control socket.
    assert!(nofile >= cap + 1024, "LimitNOFILE={nofile} for {cap} connections");
}
