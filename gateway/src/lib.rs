//! The VPN gateway, as a sans-IO state machine: client sessions and grants from the control
//! plane, CIDR and DNS resources, DNS NAT (proxy IP <-> real IP per client), filters, ICMP
//! errors, and the flow tracker that writes the flow log (`flow_logs` tracing events and
//! `poll_flow_record`).
