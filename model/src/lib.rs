//! The reference model: an independent statement of what must happen in a scenario. From the
//! scenario alone it predicts every delivery (who receives what, from which address, translated
//! how), every drop and ICMP error, and the exact flow records. It never uses the relay, gateway
//! or XDP code it judges.
