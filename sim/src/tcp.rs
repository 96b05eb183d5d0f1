//! One side of a scripted TCP connection. The client and the resource responder both use it:
//! each acts when the runner says so (open, send data, close, reset) and answers what it
//! receives exactly as docs/harness.md says, so every segment is predictable.

use observation::{TcpFlags, seq_ge};
use scenario_format::settings::{CLIENT_ISN, RESOURCE_ISN, client_isn};

/// A segment to send: flags, sequence and acknowledgement numbers, payload length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub flags: TcpFlags,
    pub seq: u32,
    pub ack: u32,
    pub payload: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSide {
    initial_seq: u32,
    /// Next sequence number to send.
    seq: u32,
    /// Next sequence number expected from the other side (none before anything arrived).
    ack: Option<u32>,
    fin_sent: bool,
    /// The other side half-closes: its FIN gets a bare ACK, not this side's FIN.
    keeps_open: bool,
    /// An ACK arrived after this side's SYN-ACK: a SYN from now on gets a challenge ACK (RFC
    /// 5961, section 4), as Linux sends it, not another SYN-ACK.
    established: bool,
}

impl TcpSide {
    /// The client's side of connection 1 (its SYN carries `CLIENT_ISN`).
    pub fn client() -> Self {
        Self::new(CLIENT_ISN)
    }

    /// The client's side of connection `conn` (its SYN carries `settings::client_isn(conn)`).
    pub fn client_of(conn: u32) -> Self {
        Self::new(client_isn(conn))
    }

    /// The resource's side (its SYN-ACK carries `RESOURCE_ISN`).
    pub fn resource() -> Self {
        Self::new(RESOURCE_ISN)
    }

    fn new(initial_seq: u32) -> Self {
        Self {
            initial_seq,
            seq: initial_seq,
            ack: None,
            fin_sent: false,
            keeps_open: false,
            established: false,
        }
    }

    fn ack_flags() -> TcpFlags {
        TcpFlags {
            ack: true,
            ..TcpFlags::default()
        }
    }

    /// The opening SYN (sent again unchanged for a retransmission).
    pub fn syn(&mut self) -> Segment {
        self.seq = self.initial_seq + 1;
        Segment {
            flags: TcpFlags {
                syn: true,
                ..TcpFlags::default()
            },
            seq: self.initial_seq,
            ack: 0,
            payload: 0,
        }
    }

    pub fn data(&mut self, bytes: u16) -> Segment {
        let segment = Segment {
            flags: TcpFlags {
                psh: true,
                ack: true,
                ..TcpFlags::default()
            },
            seq: self.seq,
            ack: self.ack.unwrap_or(0),
            payload: bytes,
        };
        self.seq = self.seq.wrapping_add(u32::from(bytes));
        segment
    }

    pub fn fin(&mut self) -> Segment {
        self.fin_sent = true;
        let segment = Segment {
            flags: TcpFlags {
                fin: true,
                ack: true,
                ..TcpFlags::default()
            },
            seq: self.seq,
            ack: self.ack.unwrap_or(0),
            payload: 0,
        };
        self.seq = self.seq.wrapping_add(1);
        segment
    }

    pub fn rst(&mut self) -> Segment {
        Segment {
            flags: TcpFlags {
                rst: true,
                ack: true,
                ..TcpFlags::default()
            },
            seq: self.seq,
            ack: self.ack.unwrap_or(0),
            payload: 0,
        }
    }

    /// Whether the handshake is complete on this side (an ACK arrived after its SYN-ACK).
    pub fn is_established(&self) -> bool {
        self.established
    }

    /// The other side is about to half-close: answer its FIN with a bare ACK.
    pub fn keep_open(&mut self) {
        self.keeps_open = true;
    }

    /// A pure ACK of everything received.
    pub fn ack(&self) -> Segment {
        Segment {
            flags: Self::ack_flags(),
            seq: self.seq,
            ack: self.ack.unwrap_or(0),
            payload: 0,
        }
    }

    /// What this side answers to `received`, per the script: SYN -> SYN-ACK (a challenge ACK
    /// once the handshake is complete), SYN-ACK -> ACK,
    /// data -> ACK, FIN -> FIN-ACK (or the final ACK if we closed first), else nothing. Every
    /// segment but a RST moves the next expected sequence number up to what it covers (its
    /// sequence number plus payload, SYN and FIN), never back.
    pub fn answer(&mut self, received: Segment) -> Option<Segment> {
        let flags = received.flags;
        if flags.rst {
            return None;
        }
        let covers = received
            .seq
            .wrapping_add(u32::from(received.payload))
            .wrapping_add(u32::from(flags.syn))
            .wrapping_add(u32::from(flags.fin));
        self.ack = Some(match self.ack {
            Some(expected) if seq_ge(expected, covers) => expected,
            _ => covers,
        });
        if flags.syn && !flags.ack && self.established {
            return Some(self.ack());
        }
        if flags.ack && !flags.syn {
            self.established = true;
        }
        if flags.syn && !flags.ack {
            self.seq = self.initial_seq + 1;
            return Some(Segment {
                flags: TcpFlags {
                    syn: true,
                    ack: true,
                    ..TcpFlags::default()
                },
                seq: self.initial_seq,
                ack: self.ack.unwrap_or(0),
                payload: 0,
            });
        }
        if flags.syn && flags.ack {
            return Some(self.ack());
        }
        if flags.fin {
            return Some(if self.fin_sent || self.keeps_open {
                self.ack()
            } else {
                self.fin()
            });
        }
        (received.payload > 0).then(|| self.ack())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_data_and_close_follow_the_script() {
        let mut client = TcpSide::client();
        let mut resource = TcpSide::resource();
        let syn = client.syn();
        let syn_ack = resource.answer(syn).expect("SYN-ACK");
        assert!(syn_ack.flags.syn && syn_ack.flags.ack && syn_ack.ack == 1001);
        let ack = client.answer(syn_ack).expect("ACK");
        assert_eq!((ack.seq, ack.ack), (1001, 5001));
        assert_eq!(resource.answer(ack), None);
        let data = client.data(100);
        let data_ack = resource.answer(data).expect("ACK of data");
        assert_eq!(data_ack.ack, 1101);
        let fin = resource.fin();
        let fin_ack = client.answer(fin).expect("FIN-ACK");
        assert!(fin_ack.flags.fin);
        let last = resource.answer(fin_ack).expect("final ACK");
        assert!(!last.flags.fin && last.flags.ack);
        assert_eq!(client.answer(last), None);
    }
}
