//! The invariant "no `tracing` event at ERROR": while a scenario runs, every ERROR event any
//! system under test emits is collected and reported as a broken invariant.

use std::{
    fmt::Write as _,
    sync::{Arc, Mutex},
};

use tracing::{Level, Subscriber, field::Field};
use tracing_subscriber::{Layer, layer::Context};

/// Collects ERROR events (only those: the filter keeps every other callsite disabled, so flow
/// logs and debug events cost nothing here).
#[derive(Debug, Clone, Default)]
pub(crate) struct ErrorEvents(pub(crate) Arc<Mutex<Vec<String>>>);

impl<S: Subscriber> Layer<S> for ErrorEvents {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if *event.metadata().level() != Level::ERROR {
            return;
        }
        let mut text = format!("tracing ERROR in {}:", event.metadata().target());
        event.record(&mut |field: &Field, value: &dyn std::fmt::Debug| {
            let _ = write!(text, " {}={value:?}", field.name());
        });
        if let Ok(mut events) = self.0.lock() {
            events.push(text);
        }
    }
}
