//! The relay's metrics in the OpenMetrics text format, which Prometheus scrapes, served over
//! HTTP on `--metrics ADDR`.
//!
//! The server's run loop owns the relay, so a scrape asks it for a rendering ([`Scrape`])
//! and the loop answers between datagrams. Nothing is kept between scrapes: each rendering
//! reads the relay's own counters and tables at that moment, so the numbers are exactly the
//! relay's. The HTTP side is the least a scraper needs: `GET /metrics`, one response, close.

use std::{io, time::Duration};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use relay::{Drop, Relay};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot},
};

use crate::Summary;

/// A scrape waiting for the run loop's rendering.
pub(crate) type Scrape = oneshot::Sender<String>;

/// The longest request head a scraper may send.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a scraper may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Every metric of the relay at this moment, in the OpenMetrics text format.
pub(crate) fn render(
    relay: &Relay,
    summary: &Summary,
    xdp: Option<&relay_xdp::XdpRelay>,
) -> String {
    let mut registry = Registry::with_prefix("relay");
    let occupancy = relay.occupancy();
    let gauges: [(&str, &str, usize); 5] = [
        ("allocations", "Allocations alive", occupancy.allocations),
        (
            "most_allocations_of_one_user",
            "The most allocations one username holds (bound: --allocation-quota)",
            occupancy.most_allocations_of_one_user,
        ),
        (
            "most_permissions_on_one_allocation",
            "The most permissions one allocation stores (bound: --max-permissions)",
            occupancy.most_permissions,
        ),
        (
            "most_channels_on_one_allocation",
            "The most channels one allocation stores (bound: --max-channels)",
            occupancy.most_channels,
        ),
        (
            "reservations",
            "Ports kept for a RESERVATION-TOKEN (EVEN-PORT with R set; bound: \
             --max-reservations)",
            occupancy.reservations,
        ),
    ];
    for (name, help, value) in gauges {
        let gauge = Gauge::<i64>::default();
        gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        registry.register(name, help, gauge);
    }
    let counters: [(&str, &str, u64); 6] = [
        (
            "allocations_created",
            "Allocations created",
            summary.allocations_created,
        ),
        (
            "allocations_freed",
            "Allocations freed",
            summary.allocations_freed,
        ),
        (
            "datagrams_received",
            "Datagrams read from every socket",
            summary.datagrams_received,
        ),
        (
            "control_sent",
            "STUN responses and Data indications sent",
            summary.control_sent,
        ),
        (
            "send_failures",
            "Datagrams that could not be sent",
            summary.send_failures,
        ),
        (
            "bind_failures",
            "Allocation sockets that could not be bound (answered 508)",
            summary.bind_failures,
        ),
    ];
    for (name, help, value) in counters {
        let counter = Counter::<u64>::default();
        counter.inc_by(value);
        registry.register(name, help, counter);
    }
    let relayed = Family::<[(&'static str, &'static str); 1], Counter>::default();
    relayed
        .get_or_create(&[("to", "peer")])
        .inc_by(summary.relayed_to_peers);
    relayed
        .get_or_create(&[("to", "client")])
        .inc_by(summary.relayed_to_clients);
    registry.register(
        "datagrams_relayed",
        "Data datagrams relayed, by where they went (a peer, or a client in ChannelData)",
        relayed,
    );
    let drops = Family::<[(&'static str, &'static str); 1], Counter>::default();
    for reason in Drop::ALL {
        let count = relay.drop_counts().get(reason).copied().unwrap_or(0);
        drops
            .get_or_create(&[("reason", reason.as_str())])
            .inc_by(count);
    }
    registry.register("drops", "Datagrams dropped, by reason", drops);
    let rejections = Family::<[(&'static str, String); 1], Counter>::default();
    for (code, count) in relay.rejection_counts() {
        rejections
            .get_or_create(&[("code", code.to_string())])
            .inc_by(*count);
    }
    registry.register(
        "rejections",
        "Requests refused, by the error code of the response",
        rejections,
    );
    if let Some(xdp) = xdp {
        let runs = Family::<[(&'static str, &'static str); 1], Counter>::default();
        match xdp.reason_counters() {
            Ok(counters) => {
                for (reason, count) in counters.non_zero() {
                    runs.get_or_create(&[("reason", reason)]).inc_by(count);
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read the XDP reason counters"),
        }
        registry.register(
            "xdp_runs",
            "Frames the attached XDP program handled, by the reason of its verdict \
             (tx/...: relayed in the kernel; pass/...: to the sockets)",
            runs,
        );
        let overflow = Family::<[(&'static str, &'static str); 1], Gauge>::default();
        let (channels, allocations) = xdp.overflow_entries();
        for (table, entries) in [("channel", channels), ("allocation", allocations)] {
            overflow
                .get_or_create(&[("table", table)])
                .set(i64::try_from(entries).unwrap_or(i64::MAX));
        }
        registry.register(
            "xdp_overflow_entries",
            "Bindings whose bucket in the XDP program's table was full, held in its overflow \
             hash map instead (a hash lookup per frame rather than the inlined bucket read)",
            overflow,
        );
        let errors = Counter::<u64>::default();
        errors.inc_by(summary.xdp_map_errors);
        registry.register(
            "xdp_map_errors",
            "Relay events the XDP maps could not mirror",
            errors,
        );
    }
    let mut body = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut body, &registry);
    body
}

/// Serves scrapes on `listener` until the run loop goes away.
pub(crate) async fn serve(listener: TcpListener, scrapes: mpsc::Sender<Scrape>) {
    loop {
        let Ok((stream, from)) = listener.accept().await else {
            continue;
        };
        let scrapes = scrapes.clone();
        tokio::spawn(async move {
            if let Err(error) = answer(stream, &scrapes).await {
                tracing::debug!(%from, %error, "metrics request failed");
            }
        });
    }
}

/// Reads one request head and answers it: the metrics for `GET /metrics`, 404 otherwise.
async fn answer(mut stream: TcpStream, scrapes: &mpsc::Sender<Scrape>) -> io::Result<()> {
    let head = tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no request in time"))??;
    let wants_metrics = head
        .lines()
        .next()
        .is_some_and(|line| line.starts_with("GET /metrics ") || line == "GET /metrics");
    let (status, body) = if wants_metrics {
        let (reply, rendering) = oneshot::channel();
        scrapes
            .send(reply)
            .await
            .map_err(|_| io::Error::other("the relay stopped"))?;
        let body = rendering
            .await
            .map_err(|_| io::Error::other("the relay stopped"))?;
        ("200 OK", body)
    } else {
        ("404 Not Found", "only /metrics is here\n".to_owned())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/openmetrics-text; version=1.0.0; \
         charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// The request up to its blank line, at most [`MAX_REQUEST`] bytes.
async fn read_head(stream: &mut TcpStream) -> io::Result<String> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..read]);
        if head.len() > MAX_REQUEST {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request too long",
            ));
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}
