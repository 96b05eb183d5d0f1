//! One seed's run: a fresh world, then random client operations and packets, interleaved.

use proto::rng::SplitMix64;
use relay_xdp::{ReasonCounters, XdpRelay, relay_table};

use crate::check::check_packet;
use crate::generate::{random_op, random_packet};
use crate::rng::Rng;
use crate::support::{CLIENTS, Op, World, mirror_and_check, perform, world_with_clients};
use crate::tally::Tally;

/// One seed's world, and where its run stands.
pub(crate) struct SeedRun {
    seed: u64,
    rng: Rng,
    world: World,
    /// The XDP reason counters after the latest packet.
    counters: ReasonCounters,
    step: usize,
    /// The latest client operations, for failure reports.
    recent_ops: Vec<String>,
}

impl SeedRun {
    /// A fresh world whose clients have all allocated, mirrored into fresh maps.
    pub(crate) fn start(xdp: &mut XdpRelay, seed: u64) -> Self {
        let rng = Rng(SplitMix64::new(seed));
        let mut world = world_with_clients(seed);
        xdp.configure_for(world.relay.config()).expect("configure");
        let counters = xdp.reason_counters().expect("counters");
        for index in 0..CLIENTS.len() {
            perform(&mut world, Op::Allocate(index));
        }
        mirror_and_check(&mut world, xdp).expect("mirrored after allocating");
        Self {
            seed,
            rng,
            world,
            counters,
            step: 0,
            recent_ops: Vec::new(),
        }
    }

    /// Random client operations and `packets` random packets, interleaved.
    pub(crate) fn run(mut self, xdp: &mut XdpRelay, packets: usize, tally: &mut Tally) {
        let mut sent = 0;
        while sent < packets {
            self.step += 1;
            if self.rng.percent(22) {
                self.operate(xdp, tally);
            } else {
                self.send_packet(xdp, tally);
                sent += 1;
            }
        }
    }

    /// A random client operation, mirrored into the maps and checked against the relay.
    fn operate(&mut self, xdp: &mut XdpRelay, tally: &mut Tally) {
        let (seed, step) = (self.seed, self.step);
        let op = random_op(&mut self.rng);
        perform(&mut self.world, op);
        tally.operations += 1;
        self.recent_ops.push(format!(
            "step {step} at {:?}: {op:?}",
            self.world.now - self.world.start
        ));
        if self.recent_ops.len() > 12 {
            self.recent_ops.remove(0);
        }
        if let Err(error) = mirror_and_check(&mut self.world, xdp) {
            panic!(
                "seed {seed} step {step}: {error}\nrecent operations:\n  {}",
                self.recent_ops.join("\n  ")
            );
        }
        tally.most_bindings = tally
            .most_bindings
            .max(relay_table(&self.world.relay).len());
    }

    /// A random packet, run through both and checked.
    fn send_packet(&mut self, xdp: &mut XdpRelay, tally: &mut Tally) {
        let (seed, step) = (self.seed, self.step);
        let packet = random_packet(&mut self.rng, &mut self.world);
        let context = format!(
            "seed {seed} step {step} at {:?}, bindings {:?}\n    recent operations:\n      {}",
            self.world.now - self.world.start,
            relay_table(&self.world.relay),
            self.recent_ops.join("\n      ")
        );
        check_packet(
            xdp,
            &mut self.world,
            &mut self.counters,
            &packet,
            &context,
            tally,
        );
        // Data never changes bindings; should anything a packet did (a STUN message from
        // a client) make the relay announce something, it is mirrored and checked too.
        if self.world.has_events()
            && let Err(error) = mirror_and_check(&mut self.world, xdp)
        {
            panic!(
                "seed {seed} step {step}, after {}: {error}",
                packet.describe()
            );
        }
    }
}
