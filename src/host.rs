//! Facts read off the host: what it can give an app, and which TCP ports are taken.

use crate::catalog::Requirements;
use std::collections::BTreeSet;
use std::path::Path;

#[derive(Debug, Clone, Copy)]
pub struct Resources {
    pub cpus: u32,
    pub memory_available_mb: u64,
    pub disk_free_mb: u64,
}

impl Resources {
    /// Reads cores, MemAvailable and the free space of the filesystem holding `state_dir`.
    pub fn probe(state_dir: &Path) -> std::io::Result<Resources> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let meminfo = std::fs::read_to_string("/proc/meminfo")?;
        let memory_available_kb = meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemAvailable:"))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .ok_or_else(|| std::io::Error::other("/proc/meminfo has no MemAvailable"))?;
        let stat = nix::sys::statvfs::statvfs(state_dir).map_err(std::io::Error::from)?;
        let disk_free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
        Ok(Resources {
            cpus,
            memory_available_mb: memory_available_kb / 1024,
            disk_free_mb: disk_free / (1024 * 1024),
        })
    }

    /// Every requirement the host falls short of, in words; empty when all are met.
    pub fn shortfalls(&self, needs: &Requirements) -> Vec<String> {
        let mut missing = Vec::new();
        if self.cpus < needs.cpu {
            missing.push(format!(
                "cpu: needs {} cores, the host has {}",
                needs.cpu, self.cpus
            ));
        }
        if self.memory_available_mb < needs.memory_mb {
            missing.push(format!(
                "memory: needs {} MiB, {} MiB available",
                needs.memory_mb, self.memory_available_mb
            ));
        }
        if self.disk_free_mb < needs.disk_mb {
            missing.push(format!(
                "disk: needs {} MiB, {} MiB free",
                needs.disk_mb, self.disk_free_mb
            ));
        }
        missing
    }
}

/// TCP ports with a listening socket on any address, IPv4 or IPv6.
pub fn listening_tcp_ports() -> BTreeSet<u16> {
    listening_ports("tcp")
}

/// Ports of `protocol` ("tcp" or "udp") that a socket of the host listens on (a bound,
/// unconnected socket for UDP), on any address, IPv4 or IPv6.
pub fn listening_ports(protocol: &str) -> BTreeSet<u16> {
    let state = if protocol == "udp" { "07" } else { "0A" };
    [
        format!("/proc/net/{protocol}"),
        format!("/proc/net/{protocol}6"),
    ]
    .iter()
    .filter_map(|path| std::fs::read_to_string(path).ok())
    .flat_map(|table| parse_listening(&table, state))
    .collect()
}

/// Parses a `/proc/net/{tcp,udp}*` table: the sockets in `state` (`0A` is TCP's LISTEN,
/// `07` a bound UDP socket); the port is the hex after the colon of the local address.
fn parse_listening(table: &str, listen_state: &str) -> Vec<u16> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            if state != listen_state {
                return None;
            }
            u16::from_str_radix(local.rsplit(':').next()?, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_state_only() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue\n\
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000\n\
   1: 0100007F:0050 0100007F:9C40 01 00000000:00000000 00:00000000 00000000\n";
        assert_eq!(parse_listening(table, "0A"), vec![0x1F90]);
    }

    #[test]
    fn sees_a_real_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(listening_tcp_ports().contains(&port));
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        assert!(listening_ports("udp").contains(&port));
    }

    #[test]
    fn shortfalls_name_each_resource() {
        let host = Resources {
            cpus: 2,
            memory_available_mb: 100,
            disk_free_mb: 10,
        };
        let needs = Requirements {
            cpu: 4,
            memory_mb: 50,
            disk_mb: 20,
        };
        let missing = host.shortfalls(&needs);
        assert_eq!(missing.len(), 2);
        assert!(missing[0].starts_with("cpu") && missing[1].starts_with("disk"));
    }
}

/// The IPv4 address of the interface that holds the default route, for app URLs when
/// `public_host` is not configured; loopback when the host has no default route.
pub fn primary_address() -> String {
    let default_interface = std::fs::read_to_string("/proc/net/route")
        .ok()
        .and_then(|table| default_route_interface(&table));
    let address = default_interface.and_then(|name| {
        nix::ifaddrs::getifaddrs().ok()?.find_map(|ifaddr| {
            let ipv4 = ifaddr.address?.as_sockaddr_in()?.ip();
            (ifaddr.interface_name == name).then_some(ipv4)
        })
    });
    address.map_or_else(|| "127.0.0.1".to_string(), |ip| ip.to_string())
}

/// `/proc/net/route`: the interface whose destination is 00000000.
fn default_route_interface(table: &str) -> Option<String> {
    table.lines().skip(1).find_map(|line| {
        let mut fields = line.split_whitespace();
        let interface = fields.next()?;
        (fields.next()? == "00000000").then(|| interface.to_string())
    })
}

#[cfg(test)]
mod route_tests {
    use super::*;

    #[test]
    fn finds_the_default_route() {
        let table = "Iface\tDestination\tGateway\n\
eth0\t0000A8C0\t00000000\n\
eth1\t00000000\t0100A8C0\n";
        assert_eq!(default_route_interface(table).as_deref(), Some("eth1"));
        assert_eq!(default_route_interface("Iface\tDestination\n"), None);
    }
}
