//! The control plane: what the harness (in place of a portal) tells the gateway. Every call
//! either succeeds or returns a [`ControlError`] and changes nothing.

use std::net::IpAddr;
use std::time::Instant;

use proto::flow::{ClientId, CloseReason, ResourceId};

use crate::cidr::{PROXY_V4, PROXY_V6, TUNNEL_V4, TUNNEL_V6};
use crate::config::{ClientConfig, ControlError, Resource};
use crate::domain;
use crate::filter::Filter;
use crate::gateway::{Client, Gateway};

impl Gateway {
    fn refuse_if_shut_down(&self) -> Result<(), ControlError> {
        if self.shut_down {
            Err(ControlError::ShutDown)
        } else {
            Ok(())
        }
    }

    /// Adds a client session.
    pub fn add_client(&mut self, config: ClientConfig) -> Result<(), ControlError> {
        self.refuse_if_shut_down()?;
        if self.clients.contains_key(&config.id) {
            return Err(ControlError::DuplicateClient(config.id));
        }
        if self.sessions.contains_key(&config.session_id) {
            return Err(ControlError::DuplicateSession(config.session_id));
        }
        for (ip, range) in [
            (config.tunnel_ip(true), TUNNEL_V4),
            (config.tunnel_ip(false), TUNNEL_V6),
        ] {
            if !range.contains(ip) {
                return Err(ControlError::TunnelIpOutOfRange(ip));
            }
            if self.tunnel_ips.contains_key(&ip) {
                return Err(ControlError::TunnelIpInUse(ip));
            }
        }
        self.sessions.insert(config.session_id, config.id);
        self.tunnel_ips.insert(config.tunnel_ip(true), config.id);
        self.tunnel_ips.insert(config.tunnel_ip(false), config.id);
        self.clients.insert(config.id, Client::new(config));
        Ok(())
    }

    /// Removes a client: its open flows close with reason `revoked` (end = `now`), packets
    /// waiting for DNS are dropped (`dns-resolution-failed`), and its session, tunnel IPs and
    /// mappings are forgotten.
    pub fn remove_client(&mut self, id: ClientId, now: Instant) -> Result<(), ControlError> {
        let t = self.advance(now);
        if !self.clients.contains_key(&id) {
            return Err(ControlError::UnknownClient(id));
        }
        for idx in self.flows_in_start_order(|f| f.client == id) {
            self.close_flow(idx, CloseReason::Revoked, t);
        }
        if let Some(client) = self.clients.remove(&id) {
            self.sessions.remove(&client.config.session_id);
            self.tunnel_ips.remove(&client.config.tunnel_ip(true));
            self.tunnel_ips.remove(&client.config.tunnel_ip(false));
        }
        self.dns.remove_client(id);
        self.run_dns_actions(t);
        Ok(())
    }

    /// Adds a resource.
    pub fn add_resource(&mut self, resource: Resource) -> Result<(), ControlError> {
        self.refuse_if_shut_down()?;
        if self.resources.contains_key(&resource.id) {
            return Err(ControlError::DuplicateResource(resource.id));
        }
        self.resources.insert(resource.id, resource);
        Ok(())
    }

    /// Removes a resource: its open flows close with reason `revoked` (end = `now`) and every
    /// grant of it is withdrawn.
    pub fn remove_resource(&mut self, id: ResourceId, now: Instant) -> Result<(), ControlError> {
        let t = self.advance(now);
        if !self.resources.contains_key(&id) {
            return Err(ControlError::UnknownResource(id));
        }
        for idx in self.flows_in_start_order(|f| f.resource == id) {
            self.close_flow(idx, CloseReason::Revoked, t);
        }
        self.resources.remove(&id);
        for client in self.clients.values_mut() {
            client.grants.remove(&id);
        }
        Ok(())
    }

    /// Grants `resource` to `client` with `filters` (empty = everything). Granting again
    /// replaces the filters for new flows; open flows are not re-checked.
    pub fn grant(
        &mut self,
        client: ClientId,
        resource: ResourceId,
        filters: Vec<Filter>,
    ) -> Result<(), ControlError> {
        self.refuse_if_shut_down()?;
        if !self.resources.contains_key(&resource) {
            return Err(ControlError::UnknownResource(resource));
        }
        let c = self
            .clients
            .get_mut(&client)
            .ok_or(ControlError::UnknownClient(client))?;
        c.grants.insert(resource, filters);
        Ok(())
    }

    /// Withdraws a grant: the client's open flows to the resource close at once with reason
    /// `revoked` (end = `now`); their later packets are treated as new (and denied).
    pub fn revoke(
        &mut self,
        client: ClientId,
        resource: ResourceId,
        now: Instant,
    ) -> Result<(), ControlError> {
        let t = self.advance(now);
        let c = self
            .clients
            .get(&client)
            .ok_or(ControlError::UnknownClient(client))?;
        if !c.grants.contains_key(&resource) {
            return Err(ControlError::NoSuchGrant(client, resource));
        }
        for idx in self.flows_in_start_order(|f| f.client == client && f.resource == resource) {
            self.close_flow(idx, CloseReason::Revoked, t);
        }
        if let Some(c) = self.clients.get_mut(&client) {
            c.grants.remove(&resource);
        }
        Ok(())
    }

    /// Tells the gateway that, for `client`, `proxy_ip` stands for `domain`. The gateway
    /// resolves the domain at once (A for an IPv4 proxy IP, AAAA for IPv6). Mapping a proxy IP
    /// again to the same domain changes nothing; to another domain replaces the mapping (open
    /// flows keep their real IP and domain; packets waiting for the old answer are dropped,
    /// `dns-resolution-failed`).
    pub fn map_dns(
        &mut self,
        client: ClientId,
        proxy_ip: IpAddr,
        domain: &str,
        now: Instant,
    ) -> Result<(), ControlError> {
        let t = self.advance(now);
        self.refuse_if_shut_down()?;
        let in_range = match proxy_ip {
            IpAddr::V4(_) => PROXY_V4.contains(proxy_ip),
            IpAddr::V6(_) => PROXY_V6.contains(proxy_ip),
        };
        if !in_range {
            return Err(ControlError::ProxyIpOutOfRange(proxy_ip));
        }
        let domain = domain::normalize(domain)?;
        if !self.clients.contains_key(&client) {
            return Err(ControlError::UnknownClient(client));
        }
        self.dns.map(client, proxy_ip, &domain, t);
        self.run_dns_actions(t);
        Ok(())
    }

    /// Forgets a proxy IP mapping (open flows keep going; packets waiting for it are dropped,
    /// `dns-resolution-failed`).
    pub fn unmap_dns(
        &mut self,
        client: ClientId,
        proxy_ip: IpAddr,
        now: Instant,
    ) -> Result<(), ControlError> {
        let t = self.advance(now);
        if !self.clients.contains_key(&client) {
            return Err(ControlError::UnknownClient(client));
        }
        if !self.dns.unmap(client, proxy_ip) {
            return Err(ControlError::UnknownProxyIp(client, proxy_ip));
        }
        self.run_dns_actions(t);
        Ok(())
    }
}
