//! `keyward iptables install|uninstall`: the nat OUTPUT rules that send every TCP connection of the pod (or
//! host) to the transparent listener, except the proxy's own, as istio-iptables does for Envoy.
//!
//! Everything install adds lives in chains of its own (`KEYWARD_OUTPUT` in nat, `KEYWARD_QUIC` in filter)
//! plus one jump from `OUTPUT` to each, so uninstall removes exactly that and nothing else. Install first
//! removes a previous install, so both are idempotent.

use std::net::IpAddr;
use std::process::Command;

const NAT_CHAIN: &str = "KEYWARD_OUTPUT";
const QUIC_CHAIN: &str = "KEYWARD_QUIC";

/// What `keyward iptables install` was asked for (its command-line flags).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The uid Keyward runs as; its own connections are not redirected.
    #[arg(long)]
    pub proxy_uid: u32,
    /// The transparent listener's port (`transparent.listen`, on 127.0.0.1).
    #[arg(long, default_value_t = 15001)]
    pub proxy_port: u16,
    /// Redirect only these destination ports (`80,443`); default: all TCP.
    #[arg(long, value_delimiter = ',')]
    pub ports: Vec<u16>,
    /// Destinations left alone (`10.96.0.0/12,192.168.1.5`).
    #[arg(long, value_delimiter = ',')]
    pub exclude_cidrs: Vec<String>,
    /// Destination ports left alone.
    #[arg(long, value_delimiter = ',')]
    pub exclude_ports: Vec<u16>,
    /// Reject outbound UDP 443 so QUIC clients fall back to TCP (which is captured).
    #[arg(long)]
    pub drop_quic: bool,
    /// The iptables binary (`iptables`, `iptables-legacy`, `iptables-nft`).
    #[arg(long = "iptables", default_value = "iptables")]
    pub binary: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error("`{binary}` not found: install the iptables package (nft or legacy backend), or pass --iptables PATH")]
    Missing { binary: String },
    #[error("`{command}` was refused: {message} (it needs root or the NET_ADMIN and NET_RAW capabilities)")]
    Permission { command: String, message: String },
    #[error("`{command}` failed: {message}")]
    Failed { command: String, message: String },
    #[error("--exclude-cidrs: `{0}` is not an address or address/prefix")]
    BadCidr(String),
}

/// The rules install adds, each as iptables arguments after `-w` (the xtables lock is waited for).
pub fn plan(opts: &Options) -> Result<Vec<Vec<String>>, IptablesError> {
    for cidr in &opts.exclude_cidrs {
        let (ip, prefix) = cidr.split_once('/').unwrap_or((cidr, "32"));
        let ok = ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv4()) && prefix.parse::<u8>().is_ok_and(|p| p <= 32);
        if !ok {
            return Err(IptablesError::BadCidr(cidr.clone()));
        }
    }
    let rule = |args: &[&str]| -> Vec<String> { args.iter().map(|s| s.to_string()).collect() };
    let nat = |args: &[&str]| {
        let mut r = rule(&["-t", "nat", "-A", NAT_CHAIN]);
        r.extend(rule(args));
        r
    };
    let mut rules = vec![rule(&["-t", "nat", "-N", NAT_CHAIN])];
    let uid = opts.proxy_uid.to_string();
    // Keyward's own upstream connections: never looped back into itself.
    rules.push(nat(&["-m", "owner", "--uid-owner", &uid, "-j", "RETURN"]));
    // Loopback: the CONNECT listener, the admin API and anything else local stays reachable as it is.
    rules.push(nat(&["-d", "127.0.0.0/8", "-j", "RETURN"]));
    // DNS over TCP.
    rules.push(nat(&["-p", "tcp", "--dport", "53", "-j", "RETURN"]));
    for cidr in &opts.exclude_cidrs {
        rules.push(nat(&["-d", cidr, "-j", "RETURN"]));
    }
    for port in &opts.exclude_ports {
        rules.push(nat(&["-p", "tcp", "--dport", &port.to_string(), "-j", "RETURN"]));
    }
    let to = opts.proxy_port.to_string();
    if opts.ports.is_empty() {
        rules.push(nat(&["-p", "tcp", "-j", "REDIRECT", "--to-ports", &to]));
    } else {
        let ports = opts.ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        rules.push(nat(&[
            "-p",
            "tcp",
            "-m",
            "multiport",
            "--dports",
            &ports,
            "-j",
            "REDIRECT",
            "--to-ports",
            &to,
        ]));
    }
    rules.push(rule(&["-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-j", NAT_CHAIN]));
    if opts.drop_quic {
        rules.push(rule(&["-t", "filter", "-N", QUIC_CHAIN]));
        rules.push(rule(&[
            "-t", "filter", "-A", QUIC_CHAIN, "-p", "udp", "--dport", "443", "-j", "REJECT",
        ]));
        rules.push(rule(&["-t", "filter", "-A", "OUTPUT", "-p", "udp", "-j", QUIC_CHAIN]));
    }
    Ok(rules)
}

/// Adds the rules of [`plan`], after removing any earlier install.
pub fn install(opts: &Options) -> Result<usize, IptablesError> {
    let rules = plan(opts)?;
    uninstall(&opts.binary)?;
    for args in &rules {
        run(&opts.binary, args)?;
    }
    Ok(rules.len())
}

/// Removes the jumps from OUTPUT and Keyward's chains; nothing else. Returns how many jumps it removed.
pub fn uninstall(binary: &str) -> Result<usize, IptablesError> {
    let mut removed = 0;
    for (table, chain, proto) in [("nat", NAT_CHAIN, "tcp"), ("filter", QUIC_CHAIN, "udp")] {
        if !chain_exists(binary, table, chain)? {
            continue;
        }
        let jump = |op: &str| -> Vec<String> {
            ["-t", table, op, "OUTPUT", "-p", proto, "-j", chain]
                .iter()
                .map(|s| s.to_string())
                .collect()
        };
        // `-C` says whether a jump is there; each `-D` removes one.
        while run(binary, &jump("-C")).is_ok() {
            run(binary, &jump("-D"))?;
            removed += 1;
        }
        run(binary, &["-t".into(), table.into(), "-F".into(), chain.into()])?;
        run(binary, &["-t".into(), table.into(), "-X".into(), chain.into()])?;
    }
    Ok(removed)
}

fn chain_exists(binary: &str, table: &str, chain: &str) -> Result<bool, IptablesError> {
    let out = command(binary, &["-t".into(), table.into(), "-S".into(), "OUTPUT".into()])?;
    if !out.status.success() {
        return Err(failure(binary, &["-t", table, "-S", "OUTPUT"].map(String::from), &out));
    }
    let listed = command(binary, &["-t".into(), table.into(), "-S".into(), chain.into()])?;
    Ok(listed.status.success())
}

fn run(binary: &str, args: &[String]) -> Result<(), IptablesError> {
    let out = command(binary, args)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(failure(binary, args, &out))
    }
}

fn command(binary: &str, args: &[String]) -> Result<std::process::Output, IptablesError> {
    Command::new(binary)
        .arg("-w")
        .args(args)
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => IptablesError::Missing {
                binary: binary.to_string(),
            },
            _ => IptablesError::Failed {
                command: format!("{binary} -w {}", args.join(" ")),
                message: e.to_string(),
            },
        })
}

fn failure(binary: &str, args: &[String], out: &std::process::Output) -> IptablesError {
    let command = format!("{binary} -w {}", args.join(" "));
    let message = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let lower = message.to_lowercase();
    if lower.contains("permission denied") || lower.contains("operation not permitted") {
        IptablesError::Permission { command, message }
    } else {
        IptablesError::Failed { command, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        Options {
            proxy_uid: 65532,
            proxy_port: 15001,
            ports: vec![],
            exclude_cidrs: vec![],
            exclude_ports: vec![],
            drop_quic: false,
            binary: "iptables".into(),
        }
    }

    #[test]
    fn the_proxy_uid_and_loopback_return_before_the_redirect() {
        let rules: Vec<String> = plan(&options()).unwrap().iter().map(|r| r.join(" ")).collect();
        let at = |needle: &str| rules.iter().position(|r| r.contains(needle)).unwrap();
        assert!(at("--uid-owner 65532 -j RETURN") < at("REDIRECT"));
        assert!(at("-d 127.0.0.0/8 -j RETURN") < at("REDIRECT"));
        assert!(rules.last().unwrap().ends_with("-A OUTPUT -p tcp -j KEYWARD_OUTPUT"));
        assert!(rules.iter().any(|r| r.ends_with("-p tcp -j REDIRECT --to-ports 15001")));
    }

    #[test]
    fn ports_exclusions_and_quic() {
        let opts = Options {
            ports: vec![80, 443],
            exclude_cidrs: vec!["10.96.0.0/12".into()],
            exclude_ports: vec![5432],
            drop_quic: true,
            ..options()
        };
        let rules: Vec<String> = plan(&opts).unwrap().iter().map(|r| r.join(" ")).collect();
        assert!(rules.iter().any(|r| r.contains("--dports 80,443 -j REDIRECT")));
        assert!(rules.iter().any(|r| r.ends_with("-d 10.96.0.0/12 -j RETURN")));
        assert!(rules.iter().any(|r| r.ends_with("--dport 5432 -j RETURN")));
        assert!(rules
            .iter()
            .any(|r| r.contains("KEYWARD_QUIC -p udp --dport 443 -j REJECT")));
        for bad in ["10.0.0.0/33", "fd00::/8", "redis"] {
            let opts = Options {
                exclude_cidrs: vec![bad.into()],
                ..options()
            };
            assert!(matches!(plan(&opts), Err(IptablesError::BadCidr(_))), "{bad}");
        }
    }

    #[test]
    fn a_missing_binary_is_named() {
        let e = uninstall("/nonexistent/iptables").unwrap_err();
        assert!(matches!(e, IptablesError::Missing { .. }), "{e}");
    }
}
