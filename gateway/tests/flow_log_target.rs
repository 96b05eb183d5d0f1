//! Per-instance flow logs, and that they go to the `flow_logs` tracing target.
//!
//! This is the only test in its binary, and must stay so. It captures tracing output with a
//! subscriber scoped to its thread, and tracing caches each event site's interest process-wide:
//! when another test thread reaches the `flow started` site first (with no subscriber of its
//! own), it can cache "never interested" at the moment this test's subscriber is being
//! registered, and the event is then skipped here too. In the shared `data_path` binary that
//! made this test fail about one run in three; alone in its process nothing else registers the
//! site.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use gateway::Event;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn flow_logs_are_per_instance_and_go_to_the_flow_logs_target() {
    let buf = Buffer::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let (on, off) = tracing::subscriber::with_default(subscriber, || {
        let fam = Fam::V4;
        let pkt = udp(fam.tunnel_ip(), 5000, fam.resource_ip(7), 53, b"data");
        let mut on = Harness::new(fam);
        let mut off = Harness::with_config(fam, |c| c.flow_logs = false);
        for h in [&mut on, &mut off] {
            h.send(&pkt).unwrap();
            assert_eq!(h.drain().tun.len(), 1, "forwarding works either way");
            h.gw.shutdown(h.now);
        }
        let events = |h: &mut Harness| {
            std::iter::from_fn(|| h.gw.poll_event())
                .filter(|e| matches!(e, Event::FlowStarted(_)))
                .count()
        };
        (
            (on.records().len(), events(&mut on)),
            (off.records().len(), events(&mut off)),
        )
    });
    assert_eq!(on, (1, 1));
    assert_eq!(off, (0, 0));
    let log = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert_eq!(log.matches("flow_logs: flow started").count(), 1, "{log}");
    assert_eq!(log.matches("flow_logs: flow completed").count(), 1, "{log}");
    assert!(
        log.contains("start=2025-01-01T00:00:00.000000000Z"),
        "{log}"
    );
    assert!(log.contains("close_reason=shutdown"), "{log}");
    assert!(
        log.contains("outer_contexts=[203.0.113.10:40000->203.0.113.1:51820]"),
        "{log}"
    );
}
