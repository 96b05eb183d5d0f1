//! Grant filters as text, in the syntax scenario files use: `tcp`, `udp`, `icmp`, `tcp/443`,
//! `udp/5000-5010`. A protocol without ports allows ports 1-65535.

use gateway::{Filter, PortRange};

/// Parses one filter; `Err` says what is wrong with it.
pub fn parse_filter(text: &str) -> Result<Filter, String> {
    let (protocol, ports) = match text.split_once('/') {
        Some((protocol, ports)) => (protocol, Some(ports)),
        None => (text, None),
    };
    let ports = match ports {
        None => PortRange {
            first: 1,
            last: u16::MAX,
        },
        Some(ports) => parse_ports(ports)?,
    };
    match protocol {
        "tcp" => Ok(Filter::Tcp(ports)),
        "udp" => Ok(Filter::Udp(ports)),
        "icmp" if text == "icmp" => Ok(Filter::Icmp),
        _ => Err(format!(
            "`{text}` is not a filter (tcp, udp or icmp, with /port or /low-high)"
        )),
    }
}

/// `443` or `5000-5010`: ports 1-65535, low before high.
fn parse_ports(text: &str) -> Result<PortRange, String> {
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let parse = |port: &str| {
        port.parse::<u16>()
            .ok()
            .filter(|&port| port > 0)
            .ok_or_else(|| format!("`{port}` is not a port"))
    };
    let (first, last) = (parse(low)?, parse(high)?);
    if first > last {
        return Err(format!("port range `{text}` runs backwards"));
    }
    Ok(PortRange { first, last })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_as_scenario_files_write_them() {
        assert_eq!(
            parse_filter("tcp/443"),
            Ok(Filter::Tcp(PortRange::single(443)))
        );
        assert_eq!(
            parse_filter("udp/5000-5010"),
            Ok(Filter::Udp(PortRange {
                first: 5000,
                last: 5010
            }))
        );
        assert_eq!(
            parse_filter("tcp"),
            Ok(Filter::Tcp(PortRange {
                first: 1,
                last: u16::MAX
            }))
        );
        assert_eq!(parse_filter("icmp"), Ok(Filter::Icmp));
    }

    #[test]
    fn bad_filters_are_refused_with_a_reason() {
        for bad in [
            "icmp/1",
            "sctp",
            "tcp/0",
            "tcp/70000",
            "udp/10-5",
            "tcp/",
            "",
            "tcp/a-b",
        ] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_filter("udp/10-5"),
            Err("port range `10-5` runs backwards".to_owned())
        );
    }
}
