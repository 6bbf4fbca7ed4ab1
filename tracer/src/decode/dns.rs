//! DNS messages carried by captured packets, decoded with hickory-proto into
//! the few fields an explanation needs.

use hickory_proto::op::{Message, MessageType};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema, Deserialize)]
pub struct Question {
    pub name: String,
    /// Record type as DNS names it: A, AAAA, CNAME, PTR ...
    #[serde(rename = "type")]
    pub record_type: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema, Deserialize)]
pub struct Answer {
    pub name: String,
    #[serde(rename = "type")]
    pub record_type: String,
    pub ttl: u32,
    /// The record's data as text: an address, a name (CNAME, PTR) ...
    pub data: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema, Deserialize)]
pub struct DnsMessage {
    pub id: u16,
    pub response: bool,
    /// NOERROR, NXDOMAIN, SERVFAIL ... (meaningful in responses).
    pub rcode: String,
    pub question: Option<Question>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<Answer>,
}

impl DnsMessage {
    /// Decodes a UDP payload, or a TCP segment holding a whole message after
    /// its two-byte length prefix. `None` for anything that is not one
    /// complete DNS message (a truncated capture, another protocol).
    pub fn decode(payload: &[u8], over_tcp: bool) -> Option<Self> {
        let bytes = if over_tcp {
            let (length, rest) = payload.split_first_chunk::<2>()?;
            rest.get(..usize::from(u16::from_be_bytes(*length)))?
        } else {
            payload
        };
        let message = Message::from_vec(bytes).ok()?;
        let metadata = &message.metadata;
        Some(Self {
            id: metadata.id,
            response: metadata.message_type == MessageType::Response,
            rcode: rcode_name(u16::from(metadata.response_code)),
            question: message.queries.first().map(|query| Question {
                name: without_root_dot(&query.name.to_string()),
                record_type: query.query_type.to_string(),
            }),
            answers: message
                .answers
                .iter()
                .map(|record| Answer {
                    name: without_root_dot(&record.name.to_string()),
                    record_type: record.record_type().to_string(),
                    ttl: record.ttl,
                    data: without_root_dot(&record.data.to_string()),
                })
                .collect(),
        })
    }
}

/// The mnemonic RFC 1035 and its successors give a response code.
fn rcode_name(code: u16) -> String {
    match code {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        other => format!("RCODE{other}"),
    }
}

/// `server-1.` as users write it: `server-1` (the root itself stays `.`).
fn without_root_dot(name: &str) -> String {
    match name.strip_suffix('.') {
        Some(stripped) if !stripped.is_empty() => stripped.to_string(),
        _ => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// busybox nslookup's query for server-1, A (captured on lo in a container).
    const QUERY: &[u8] = &[
        0x4f, 0x21, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, b's', b'e',
        b'r', b'v', b'e', b'r', b'-', b'1', 0x00, 0x00, 0x01, 0x00, 0x01,
    ];
    /// dockerd's answer: server-1 A 172.18.0.2, TTL 600.
    const ANSWER: &[u8] = &[
        0x4f, 0x21, 0x81, 0x80, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x08, b's', b'e',
        b'r', b'v', b'e', b'r', b'-', b'1', 0x00, 0x00, 0x01, 0x00, 0x01, 0xc0, 0x0c, 0x00, 0x01,
        0x00, 0x01, 0x00, 0x00, 0x02, 0x58, 0x00, 0x04, 172, 18, 0, 2,
    ];

    #[test]
    fn decodes_a_query() {
        let query = DnsMessage::decode(QUERY, false).unwrap();
        assert_eq!(query.id, 0x4f21);
        assert!(!query.response);
        assert_eq!(
            query.question,
            Some(Question {
                name: "server-1".into(),
                record_type: "A".into()
            })
        );
    }

    #[test]
    fn decodes_an_answer_with_its_records() {
        let answer = DnsMessage::decode(ANSWER, false).unwrap();
        assert!(answer.response);
        assert_eq!(answer.rcode, "NOERROR");
        assert_eq!(
            answer.answers,
            vec![Answer {
                name: "server-1".into(),
                record_type: "A".into(),
                ttl: 600,
                data: "172.18.0.2".into()
            }]
        );
    }

    #[test]
    fn names_the_error_codes() {
        let mut nxdomain = ANSWER[..26].to_vec();
        nxdomain[3] = 0x83; // RCODE 3
        nxdomain[7] = 0; // no answer records
        assert_eq!(
            DnsMessage::decode(&nxdomain, false).unwrap().rcode,
            "NXDOMAIN"
        );
    }

    #[test]
    fn tcp_messages_carry_a_length_prefix() {
        let mut segment = (QUERY.len() as u16).to_be_bytes().to_vec();
        segment.extend_from_slice(QUERY);
        assert_eq!(
            DnsMessage::decode(&segment, true),
            DnsMessage::decode(QUERY, false)
        );
        assert!(
            DnsMessage::decode(&segment[..10], true).is_none(),
            "a cut message is not guessed at"
        );
    }

    #[test]
    fn other_payloads_are_not_dns() {
        assert!(DnsMessage::decode(b"GET / HTTP/1.1\r\n", false).is_none());
        assert!(DnsMessage::decode(&[], false).is_none());
    }
}
