//! The relay's state in the program's maps: its public addresses (`CONFIG`) and its channel
//! bindings, written in both directions: the channel entries (client, channel) -> route for the
//! channel path, the allocation entries (allocation port, peer) -> client for the allocation
//! path. Each direction is a bucket array with an overflow hash map (module `table`).
//!
//! Relay-to-self needs both directions: ChannelData on a channel whose peer is the relay's own
//! `relay:b` goes to the client that allocation `b` has bound back to `relay:a` (`a` being the
//! sender's allocation), which is the allocation entry at the reverse of the sender's binding.
//! Each channel route carries that entry already resolved ([`ChannelRoute::relay_to_self`]),
//! so the program finds everything for a channel packet in one entry. The loader keeps it
//! equal to the lookup: a change of a channel entry resolves that key's route, and a change of
//! an allocation entry rewrites the routes of the channels whose binding is that key's reverse
//! (found through `XdpRelay::channels_by_binding`).

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::maps::MapError;
use relay_xdp_common::{
    AllocationPeer, ChannelBinding, ChannelRoute, ClientChannel, RelayConfig, channel, ports,
};

use crate::XdpRelay;

#[derive(Debug, thiserror::Error)]
pub enum BindingError {
    #[error(
        "channel number {0:#06x} is outside {min:#06x}-{max:#06x}",
        min = channel::MIN,
        max = channel::MAX
    )]
    InvalidChannel(u16),
    #[error("allocation port {0} is outside the allocation range 49152-65535")]
    InvalidAllocationPort(u16),
    #[error("no such channel binding is installed: {0:?}")]
    NotInstalled(ChannelBinding),
    #[error("a map operation failed: {0}")]
    Map(#[from] MapError),
}

impl XdpRelay {
    /// Sets the relay's public addresses; `None` for a family the relay does not serve. Frames
    /// to any other address pass, and no rewrite leaves from a family without an address.
    pub fn set_relay_addresses(
        &mut self,
        ipv4: Option<Ipv4Addr>,
        ipv6: Option<Ipv6Addr>,
    ) -> Result<(), BindingError> {
        self.config.set(0, RelayConfig::new(ipv4, ipv6), 0)?;
        Ok(())
    }

    /// The relay's public addresses as the program sees them.
    pub fn relay_addresses(&self) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>), BindingError> {
        let config = self.config.get(&0, 0)?;
        let ipv4 = (config.flags & relay_xdp_common::CONFIG_HAS_IPV4 != 0)
            .then(|| Ipv4Addr::from(config.ipv4));
        let ipv6 = (config.flags & relay_xdp_common::CONFIG_HAS_IPV6 != 0)
            .then(|| Ipv6Addr::from(config.ipv6));
        Ok((ipv4, ipv6))
    }

    /// Installs a channel binding in both directions, replacing an entry with the same
    /// (client, channel) and one with the same (allocation port, peer), and resolves the
    /// relay-to-self routes that depend on them. Entries that already hold exactly this are
    /// not written again.
    pub fn install_channel(&mut self, binding: &ChannelBinding) -> Result<(), BindingError> {
        if !channel::is_valid(binding.channel) {
            return Err(BindingError::InvalidChannel(binding.channel));
        }
        if !ports::is_allocation(binding.allocation_port) {
            return Err(BindingError::InvalidAllocationPort(binding.allocation_port));
        }
        let client_channel = binding.client_channel();
        let allocation_peer = binding.allocation_peer();
        let previous = self.channels.installed(&client_channel);
        self.allocations.insert(allocation_peer, client_channel)?;
        // After the insert above: a binding whose peer is its own allocation is its own reverse.
        let relay_to_self = self.allocations.installed(&allocation_peer.reverse());
        self.channels.insert(
            client_channel,
            ChannelRoute {
                binding: allocation_peer,
                relay_to_self: relay_to_self.unwrap_or_default(),
            },
        )?;
        if let Some(previous) = previous {
            self.forget_holder(&previous.binding, &client_channel);
        }
        self.channels_by_binding
            .entry(allocation_peer)
            .or_default()
            .push(client_channel);
        // The allocation entry at `allocation_peer` is now this client's channel: the channels
        // bound to the reverse send their relay-to-self data there.
        self.reroute(&allocation_peer.reverse(), Some(client_channel))
    }

    /// Removes a channel binding from both directions. Fails with
    /// [`BindingError::NotInstalled`] (and changes nothing) unless exactly this binding is
    /// installed.
    pub fn remove_channel(&mut self, binding: &ChannelBinding) -> Result<(), BindingError> {
        let client_channel = binding.client_channel();
        let allocation_peer = binding.allocation_peer();
        match self.channels.installed(&client_channel) {
            Some(installed) if installed.binding == allocation_peer => {}
            _ => return Err(BindingError::NotInstalled(*binding)),
        }
        self.channels.remove(&client_channel)?;
        self.forget_holder(&allocation_peer, &client_channel);
        // The reverse entry goes too, unless a later binding took the (allocation, peer) over.
        if self.allocations.installed(&allocation_peer) == Some(client_channel) {
            self.allocations.remove(&allocation_peer)?;
            self.reroute(&allocation_peer.reverse(), None)?;
        }
        Ok(())
    }

    /// Sets the relay-to-self destination of every channel bound to `binding` (after the
    /// allocation entry at `binding.reverse()` became `destination`).
    fn reroute(
        &mut self,
        binding: &AllocationPeer,
        destination: Option<ClientChannel>,
    ) -> Result<(), BindingError> {
        let Some(holders) = self.channels_by_binding.get(binding) else {
            return Ok(());
        };
        let route = ChannelRoute {
            binding: *binding,
            relay_to_self: destination.unwrap_or_default(),
        };
        for holder in holders {
            self.channels.insert(*holder, route)?;
        }
        Ok(())
    }

    /// `client_channel` no longer holds `binding`.
    fn forget_holder(&mut self, binding: &AllocationPeer, client_channel: &ClientChannel) {
        if let Some(holders) = self.channels_by_binding.get_mut(binding) {
            holders.retain(|holder| holder != client_channel);
            if holders.is_empty() {
                self.channels_by_binding.remove(binding);
            }
        }
    }

    /// The bindings whose relay-to-self destination in the kernel's channel entries differs
    /// from the allocation entry it stands for (the reverse of the binding); empty unless the
    /// maps were changed behind this loader's back. For tests.
    pub fn stale_relay_to_self_routes(&self) -> Result<Vec<ChannelBinding>, BindingError> {
        let mut stale = Vec::new();
        for (key, route) in self.channels.entries()? {
            let expected = self.allocations.get(&route.binding.reverse())?;
            if route.relay_to_self != expected.unwrap_or_default() {
                stale.push(ChannelBinding::from_entry(&key, &route.binding));
            }
        }
        stale.sort_unstable();
        Ok(stale)
    }

    /// Every installed binding, read back from the kernel's channel entries, sorted.
    pub fn channel_bindings(&self) -> Result<Vec<ChannelBinding>, BindingError> {
        let mut bindings: Vec<ChannelBinding> = self
            .channels
            .entries()?
            .iter()
            .map(|(key, route)| ChannelBinding::from_entry(key, &route.binding))
            .collect();
        bindings.sort_unstable();
        Ok(bindings)
    }

    /// Number of allocation entries in the kernel; equal to `channel_bindings().len()` when
    /// every binding was installed and removed through this API without conflicts.
    pub fn allocation_entries(&self) -> Result<usize, BindingError> {
        Ok(self.allocations.entries()?.len())
    }

    /// Keys in each direction's overflow map (their bucket was full): channel entries, then
    /// allocation entries. Those keys cost the program a hash map lookup.
    pub fn overflow_entries(&self) -> (usize, usize) {
        (
            self.channels.overflow_len(),
            self.allocations.overflow_len(),
        )
    }

    /// What the kernel holds at the two keys of `binding`: the channel route at its
    /// (client, channel) and the allocation entry at its (allocation port, peer).
    pub fn entries_at(
        &self,
        binding: &ChannelBinding,
    ) -> Result<(Option<ChannelRoute>, Option<ClientChannel>), BindingError> {
        let route = self.channels.get(&binding.client_channel())?;
        let allocation = self.allocations.get(&binding.allocation_peer())?;
        Ok((route, allocation))
    }

    /// Removes the entries at the keys of `bindings` from both directions (missing ones are
    /// no error) and forgets every route this loader resolved. When `bindings` holds every
    /// binding installed since the maps were last empty, the maps are empty afterwards
    /// (see [`XdpRelay::bindings_are_empty`]).
    pub fn clear_channels_of<'b>(
        &mut self,
        bindings: impl IntoIterator<Item = &'b ChannelBinding>,
    ) -> Result<(), BindingError> {
        for binding in bindings {
            self.channels.remove(&binding.client_channel())?;
            self.allocations.remove(&binding.allocation_peer())?;
        }
        self.channels_by_binding.clear();
        Ok(())
    }

    /// Whether the kernel holds no binding in either direction (reads back the buckets written
    /// since this was last true, and walks the overflow maps).
    pub fn bindings_are_empty(&mut self) -> Result<bool, BindingError> {
        Ok(self.channels.is_empty()? && self.allocations.is_empty()?)
    }

    /// Removes every binding from both directions.
    pub fn clear_channels(&mut self) -> Result<(), BindingError> {
        for key in self.channels.installed_keys() {
            self.channels.remove(&key)?;
        }
        for key in self.allocations.installed_keys() {
            self.allocations.remove(&key)?;
        }
        self.channels_by_binding.clear();
        Ok(())
    }

    /// Makes the maps hold exactly these addresses and bindings (for fixtures and tests).
    pub fn configure(
        &mut self,
        ipv4: Option<Ipv4Addr>,
        ipv6: Option<Ipv6Addr>,
        bindings: &[ChannelBinding],
    ) -> Result<(), BindingError> {
        self.set_relay_addresses(ipv4, ipv6)?;
        self.clear_channels()?;
        for binding in bindings {
            self.install_channel(binding)?;
        }
        Ok(())
    }
}

/// The loader's form of one of the userspace relay's channel bindings (the same four fields).
pub fn binding_from_relay(binding: &relay::ChannelBinding) -> ChannelBinding {
    ChannelBinding {
        client: binding.client,
        channel: binding.channel,
        allocation_port: binding.allocation_port,
        peer: binding.peer,
    }
}

/// The relay's table of active channels ([`relay::Relay::channel_bindings`]) in the loader's
/// form, sorted as [`XdpRelay::channel_bindings`] sorts: the maps must equal it.
pub fn relay_table(relay: &relay::Relay) -> Vec<ChannelBinding> {
    let mut table: Vec<ChannelBinding> = relay
        .channel_bindings()
        .iter()
        .map(binding_from_relay)
        .collect();
    table.sort_unstable();
    table
}

impl XdpRelay {
    /// Makes the maps mirror a freshly created userspace relay: its public addresses, and no
    /// binding.
    pub fn configure_for(&mut self, config: &relay::RelayConfig) -> Result<(), BindingError> {
        self.configure(config.public_v4, config.public_v6, &[])
    }

    /// Mirrors one of the relay's events into the maps, in the order the relay emitted them
    /// ([`relay::Relay::poll_event`]):
    ///
    /// - `ChannelBound`: installs the binding in both directions (and resolves the
    ///   relay-to-self routes that depend on it);
    /// - `ChannelRefreshed`: installs it again (idempotent: entries that already hold exactly
    ///   this binding are not written);
    /// - `ChannelUnbound`: removes it ([`BindingError::NotInstalled`] if the maps do not hold
    ///   exactly this binding, which means an event was missed);
    /// - allocation events: nothing (the program only knows channels; an allocation freed
    ///   with active channels is preceded by a `ChannelUnbound` for each).
    ///
    /// A host that applies every event holds [`relay::Relay::channel_bindings`] in the maps.
    pub fn apply(&mut self, event: &relay::Event) -> Result<(), BindingError> {
        match event {
            relay::Event::ChannelBound(binding) | relay::Event::ChannelRefreshed(binding) => {
                self.install_channel(&binding_from_relay(binding))
            }
            relay::Event::ChannelUnbound(binding) => {
                self.remove_channel(&binding_from_relay(binding))
            }
            relay::Event::AllocationCreated { .. }
            | relay::Event::AllocationRefreshed { .. }
            | relay::Event::AllocationFreed { .. } => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use relay_xdp_common::{channel, ports};

    /// The program cannot depend on `proto` or `relay` (it is `no_std` for the BPF target), so
    /// its copies of their numbers are held equal here.
    #[test]
    fn the_programs_numbers_are_the_userspace_relays() {
        assert_eq!(
            channel::MIN..=channel::MAX,
            proto::channel_data::CHANNEL_RANGE,
            "channel numbers"
        );
        for number in [0x3FFF, 0x4000, 0x4FFF, 0x5000, 0x7FFF, 0x8000, 0xFFFF] {
            assert_eq!(
                channel::is_valid(number),
                proto::channel_data::CHANNEL_RANGE.contains(&number),
                "{number:#06x}"
            );
        }
        assert_eq!(ports::TURN, relay::TURN_PORT);
        assert_eq!(
            ports::ALLOCATION_MIN..=ports::ALLOCATION_MAX,
            relay::ALLOCATION_PORTS
        );
    }
}
