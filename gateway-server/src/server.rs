//! The server: the sans-IO [`Gateway`] and its tunnel endpoint (the TURN client of its own
//! allocation) on real sockets and a TUN device, in one loop on one thread.
//!
//! Every input (a datagram, a TUN packet, a control line, a timer) is handed to the gateway or
//! the endpoint with `Instant::now()`, and after every call everything they queued is drained
//! (`Server::pump`): transmits sent, drops reported, flow records written. The rest of the
//! `impl` is in the child modules:
//!
//! - `dispatch`: inputs, timers and control commands, handed to the gateway or the endpoint;
//! - `pump`: what they queued, sent and written.

mod dispatch;
mod pump;

use std::{fmt, future::Future, io, net::SocketAddr, pin::pin, sync::Arc, time::Instant};

use gateway::Gateway;
use tokio::{sync::mpsc, task::JoinHandle};
use turn_client::{Endpoint, TurnClient};

use crate::{
    config::Setup,
    control::ControlLine,
    input::{INPUT_QUEUE, Input, read_tun},
    output::{Destination, Outputs, RunnerEvent},
    sockets::{BindError, Sockets},
    tun_device::TunDevice,
};

/// Where the server writes.
#[derive(Debug, Clone)]
pub struct Options {
    /// The flow log (one JSON line per record).
    pub flow_log: Destination,
    /// The runner's events, if wanted.
    pub events: Option<Destination>,
}

/// The server could not start; nothing is left running.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A socket could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The TUN device could not be opened or created.
    #[error("cannot open the TUN device {name}: {source}")]
    Tun { name: String, source: io::Error },
    /// The flow log or the event file could not be opened.
    #[error("cannot open the outputs: {0}")]
    Outputs(io::Error),
}

/// What the server did, logged and returned when it stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Datagrams read from the sockets.
    pub datagrams_received: u64,
    /// Datagrams sent (tunnel frames, DNS queries, TURN messages).
    pub datagrams_sent: u64,
    /// Packets read from the TUN device.
    pub tun_received: u64,
    /// Packets written to it.
    pub tun_written: u64,
    /// Datagrams or packets that could not be sent or written.
    pub send_failures: u64,
    /// Packets the gateway dropped.
    pub drops: u64,
    /// Flow records written.
    pub records: u64,
    /// Flows open at shutdown (their records are among `records`).
    pub flows_at_shutdown: usize,
    /// Lines of the flow log or the events lost to write errors.
    pub write_failures: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "datagrams received {}, sent {}; TUN packets read {}, written {}; send failures {}; \
             drops {}; flow records {} ({} open at shutdown); lines lost {}",
            self.datagrams_received,
            self.datagrams_sent,
            self.tun_received,
            self.tun_written,
            self.send_failures,
            self.drops,
            self.records,
            self.flows_at_shutdown,
            self.write_failures,
        )
    }
}

/// A gateway with its sockets bound and its TUN device open, ready to [`run`](Server::run).
#[derive(Debug)]
pub struct Server {
    gateway: Gateway,
    /// Path selection and the TURN client, on the tunnel socket of the relay's family.
    endpoint: Endpoint,
    sockets: Sockets,
    tun: Arc<TunDevice>,
    tun_reader: JoinHandle<()>,
    inputs: mpsc::Receiver<Input>,
    outputs: Outputs,
    summary: Summary,
}

impl Server {
    /// Opens the outputs and the TUN device, binds every socket and starts their readers. Must
    /// be called within a tokio runtime.
    pub fn start(setup: Setup, options: &Options) -> Result<Self, StartError> {
        let Setup { gateway, network } = setup;
        let outputs = Outputs::open(&options.flow_log, options.events.as_ref())
            .map_err(StartError::Outputs)?;
        let tun = TunDevice::open(&network.tun).map_err(|source| StartError::Tun {
            name: network.tun.clone(),
            source,
        })?;
        let tun = Arc::new(tun);
        let (sender, inputs) = mpsc::channel(INPUT_QUEUE);
        let sockets = Sockets::bind(&network.listen, network.dns_source_ports.as_ref(), &sender)?;
        let tun_reader = tokio::spawn(read_tun(Arc::clone(&tun), sender));
        // The TURN client talks to its relay from the tunnel socket of the relay's family
        // (the configuration has one); without a relay, the endpoint only passes data through.
        let endpoint_socket = network
            .relay
            .as_ref()
            .and_then(|relay| network.listen_of_family(relay.server.ip()))
            .unwrap_or(network.listen[0]);
        let endpoint = Endpoint::new(endpoint_socket, network.relay.map(TurnClient::new));
        tracing::info!(
            tun = %network.tun,
            listen = ?sockets.tunnel_addrs(),
            sockets = sockets.count(),
            "gateway listening"
        );
        Ok(Self {
            gateway,
            endpoint,
            sockets,
            tun,
            tun_reader,
            inputs,
            outputs,
            summary: Summary::default(),
        })
    }

    /// The tunnel sockets' local addresses.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        self.sockets.tunnel_addrs()
    }

    /// Announces itself, asks for its allocation, and serves until `shutdown` completes or a
    /// `shutdown` command comes on `control`; then shuts the gateway down (every open flow's
    /// record is written) and returns what it did.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
        mut control: Option<mpsc::Receiver<ControlLine>>,
    ) -> Summary {
        self.outputs.event(&RunnerEvent::Listening(
            self.sockets.tunnel_addrs().to_vec(),
        ));
        let now = Instant::now();
        if let Some(turn) = self.endpoint.turn_mut() {
            turn.allocate(now);
        }
        self.pump(now).await;
        let mut shutdown = pin!(shutdown);
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                line = next_line(&mut control) => match line {
                    Some(line) => {
                        let now = Instant::now();
                        if self.handle_control(line, now) {
                            break;
                        }
                        self.pump(now).await;
                    }
                    // EOF on stdin: no more commands; the gateway goes on.
                    None => control = None,
                },
                () = sleep_until(deadline) => {
                    let now = Instant::now();
                    self.handle_timeouts(now);
                    self.pump(now).await;
                }
                Some(input) = self.inputs.recv() => {
                    let now = Instant::now();
                    self.handle_input(input, now);
                    self.pump(now).await;
                }
            }
        }
        self.shut_down().await
    }

    /// Shuts the gateway down (closing every open flow with reason `shutdown`), releases the
    /// allocation, writes what that produced, then the `shut_down` event.
    async fn shut_down(mut self) -> Summary {
        let now = Instant::now();
        // What is due first (an idle flow closes as `idle`), so that `flows` are exactly the
        // flows the shutdown closes.
        self.handle_timeouts(now);
        self.pump(now).await;
        let flows = self.gateway.open_flow_count();
        self.gateway.shutdown(now);
        if let Some(turn) = self.endpoint.turn_mut()
            && turn.is_allocated()
        {
            turn.release(now);
        }
        self.pump(now).await;
        self.outputs.event(&RunnerEvent::ShutDown { flows });
        self.summary.flows_at_shutdown = flows;
        self.summary.records = self.outputs.records();
        self.summary.write_failures = self.outputs.write_failures();
        tracing::info!(summary = %self.summary, "gateway stopped");
        self.summary.clone()
    }
}

/// Stops the TUN reader (the sockets' readers stop with `Sockets`).
impl Drop for Server {
    fn drop(&mut self) {
        self.tun_reader.abort();
    }
}

/// The next control line; never, once stdin is closed (or without `--control-stdin`).
async fn next_line(control: &mut Option<mpsc::Receiver<ControlLine>>) -> Option<ControlLine> {
    match control {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
