//! The relay's state in the program's maps: its public addresses (`CONFIG`) and its channel
//! bindings, written in both directions (`CHANNELS` for the channel path, `ALLOCATIONS` for the
//! allocation path and relay-to-self).

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::maps::MapError;
use relay_xdp_common::{ChannelBinding, RelayConfig, channel, ports};

use crate::XdpRelay;

#[derive(Debug, thiserror::Error)]
pub enum BindingError {
    #[error("channel number {0:#06x} is outside 0x4000-0x4FFF")]
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

    /// Installs a channel binding in both maps, replacing an entry with the same
    /// (client, channel) and one with the same (allocation port, peer).
    pub fn install_channel(&mut self, binding: &ChannelBinding) -> Result<(), BindingError> {
        if !channel::is_valid(binding.channel) {
            return Err(BindingError::InvalidChannel(binding.channel));
        }
        if !ports::is_allocation(binding.allocation_port) {
            return Err(BindingError::InvalidAllocationPort(binding.allocation_port));
        }
        let client_channel = binding.client_channel();
        let allocation_peer = binding.allocation_peer();
        self.channels.insert(client_channel, allocation_peer, 0)?;
        self.allocations
            .insert(allocation_peer, client_channel, 0)?;
        Ok(())
    }

    /// Removes a channel binding from both maps. Fails with [`BindingError::NotInstalled`] (and
    /// changes nothing) unless exactly this binding is installed.
    pub fn remove_channel(&mut self, binding: &ChannelBinding) -> Result<(), BindingError> {
        let client_channel = binding.client_channel();
        let allocation_peer = binding.allocation_peer();
        match self.channels.get(&client_channel, 0) {
            Ok(installed) if installed == allocation_peer => {}
            Ok(_) | Err(MapError::KeyNotFound) => {
                return Err(BindingError::NotInstalled(*binding));
            }
            Err(error) => return Err(error.into()),
        }
        self.channels.remove(&client_channel)?;
        // The reverse entry goes too, unless a later binding took the (allocation, peer) over.
        match self.allocations.get(&allocation_peer, 0) {
            Ok(installed) if installed == client_channel => {
                self.allocations.remove(&allocation_peer)?;
            }
            Ok(_) | Err(MapError::KeyNotFound) => {}
            Err(error) => return Err(error.into()),
        }
        Ok(())
    }

    /// Every installed binding, read back from `CHANNELS`, sorted.
    pub fn channel_bindings(&self) -> Result<Vec<ChannelBinding>, BindingError> {
        let mut bindings = Vec::new();
        for entry in self.channels.iter() {
            let (key, value) = entry?;
            bindings.push(ChannelBinding::from_entry(&key, &value));
        }
        bindings.sort_unstable();
        Ok(bindings)
    }

    /// Number of entries in `ALLOCATIONS`; equal to `channel_bindings().len()` when every
    /// binding was installed and removed through this API without conflicts.
    pub fn allocation_entries(&self) -> Result<usize, BindingError> {
        let mut count = 0;
        for key in self.allocations.keys() {
            key?;
            count += 1;
        }
        Ok(count)
    }

    /// Removes every binding from both maps.
    pub fn clear_channels(&mut self) -> Result<(), BindingError> {
        let channels = self.channels.keys().collect::<Result<Vec<_>, _>>()?;
        for key in channels {
            self.channels.remove(&key)?;
        }
        let allocations = self.allocations.keys().collect::<Result<Vec<_>, _>>()?;
        for key in allocations {
            self.allocations.remove(&key)?;
        }
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
    /// - `ChannelBound`: installs the binding in both directions;
    /// - `ChannelRefreshed`: installs it again (idempotent: the entries already hold exactly
    ///   this binding; re-writing them costs two map updates and heals a map that lost them);
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
