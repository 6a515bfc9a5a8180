//! The wire forms of Engine.IO v4 packets and of the Socket.IO v5 packets inside them, as far as
//! Courier speaks them: text only (binary attachments are refused), the main namespace `/`.
//!
//! Engine.IO: one character of type (`0` open, `1` close, `2` ping, `3` pong, `4` message,
//! `5` upgrade, `6` noop) and the data; long-polling payloads join packets with `\x1e`.
//! Socket.IO, inside a message: `<type>[<namespace>,][<ack id>][<json>]`.

use serde_json::Value;

/// The separator of packets in a long-polling payload.
pub const SEPARATOR: char = '\x1e';

pub const PING: &str = "2";
pub const PONG: &str = "3";
pub const NOOP: &str = "6";
pub const CLOSE: &str = "1";
pub const PROBE_PING: &str = "2probe";
pub const PROBE_PONG: &str = "3probe";
pub const UPGRADE: &str = "5";
/// Socket.IO DISCONNECT of the main namespace: the server ended the connection for good.
pub const DISCONNECT: &str = "41";

/// One Engine.IO packet a client sent.
#[derive(Debug, Clone, PartialEq)]
pub enum EnginePacket<'a> {
    Close,
    Ping(&'a str),
    Pong(&'a str),
    Message(&'a str),
    Upgrade,
    Noop,
}

impl<'a> EnginePacket<'a> {
    pub fn parse(text: &'a str) -> Result<EnginePacket<'a>, &'static str> {
        let mut chars = text.chars();
        let kind = chars.next().ok_or("empty packet")?;
        let data = chars.as_str();
        Ok(match kind {
            '1' => EnginePacket::Close,
            '2' => EnginePacket::Ping(data),
            '3' => EnginePacket::Pong(data),
            '4' => EnginePacket::Message(data),
            '5' => EnginePacket::Upgrade,
            '6' => EnginePacket::Noop,
            // `0` (open) only ever goes from server to client; `b` is a binary message.
            'b' => return Err("binary messages are not supported"),
            _ => return Err("unknown engine.io packet type"),
        })
    }
}

/// One Socket.IO packet a client sent (inside an Engine.IO message).
#[derive(Debug, Clone, PartialEq)]
pub enum ClientPacket {
    /// `0[/ns,][{auth}]`
    Connect {
        namespace: String,
        auth: Option<Value>,
    },
    /// `1[/ns,]`
    Disconnect { namespace: String },
    /// `2[/ns,][id]["name", args...]`
    Event {
        namespace: String,
        ack: Option<u64>,
        name: String,
        args: Vec<Value>,
    },
    /// `3[/ns,]id[args...]`: the client acknowledges a server event (Courier asks for none).
    Ack { namespace: String },
}

impl ClientPacket {
    /// Parses a Socket.IO packet; the error is fit to send back to the client.
    pub fn parse(text: &str) -> Result<ClientPacket, &'static str> {
        let mut rest = text;
        let kind = rest.chars().next().ok_or("empty socket.io packet")?;
        rest = &rest[kind.len_utf8()..];
        if matches!(kind, '5' | '6') {
            return Err("binary events are not supported");
        }
        let namespace = if rest.starts_with('/') {
            let end = rest.find(',').unwrap_or(rest.len());
            let namespace = rest[..end].to_owned();
            rest = rest.get(end + 1..).unwrap_or("");
            namespace
        } else {
            "/".to_owned()
        };
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let ack = if digits > 0 {
            let id = rest[..digits].parse().map_err(|_| "ack id out of range")?;
            rest = &rest[digits..];
            Some(id)
        } else {
            None
        };
        let json = |rest: &str| -> Result<Option<Value>, &'static str> {
            if rest.is_empty() {
                Ok(None)
            } else {
                serde_json::from_str(rest)
                    .map(Some)
                    .map_err(|_| "packet data is not JSON")
            }
        };
        match kind {
            '0' => Ok(ClientPacket::Connect {
                namespace,
                auth: json(rest)?,
            }),
            '1' => Ok(ClientPacket::Disconnect { namespace }),
            '2' => {
                let Some(Value::Array(mut args)) = json(rest)? else {
                    return Err("an event is a JSON array");
                };
                if args.is_empty() {
                    return Err("an event needs a name");
                }
                let Value::String(name) = args.remove(0) else {
                    return Err("an event's name is a string");
                };
                Ok(ClientPacket::Event {
                    namespace,
                    ack,
                    name,
                    args,
                })
            }
            '3' => Ok(ClientPacket::Ack { namespace }),
            _ => Err("unknown socket.io packet type"),
        }
    }
}

/// The Engine.IO open packet (`0{...}`).
pub fn open(
    sid: &str,
    upgrades: bool,
    ping_interval_ms: u64,
    ping_timeout_ms: u64,
    max_payload: usize,
) -> String {
    let upgrades: &[&str] = if upgrades { &["websocket"] } else { &[] };
    format!(
        "0{}",
        serde_json::json!({
            "sid": sid,
            "upgrades": upgrades,
            "pingInterval": ping_interval_ms,
            "pingTimeout": ping_timeout_ms,
            "maxPayload": max_payload,
        })
    )
}

/// The answer to a successful namespace connect: `40{"sid":..,"pid":..}`.
pub fn connected(sid: &str, pid: &str) -> String {
    format!("40{}", serde_json::json!({"sid": sid, "pid": pid}))
}

/// A refused namespace connect: `44{"message":..}` (the client's `connect_error`).
pub fn connect_error(namespace: &str, message: &str) -> String {
    let body = serde_json::json!({ "message": message });
    if namespace == "/" {
        format!("44{body}")
    } else {
        format!("44{namespace},{body}")
    }
}

/// The acknowledgement of client event `id`, with no arguments: `43<id>[]`.
pub fn ack(id: u64) -> String {
    format!("43{id}[]")
}

/// An event with one argument, and the connection-state-recovery offset as a last string
/// argument when given: `42["name",data,"offset"]`. `name` and `data` are JSON already.
pub fn event(name_json: &str, data_json: Option<&str>, offset: Option<u64>) -> String {
    let mut packet = String::with_capacity(
        8 + name_json.len() + data_json.map_or(0, str::len) + if offset.is_some() { 24 } else { 0 },
    );
    packet.push_str("42[");
    packet.push_str(name_json);
    if let Some(data) = data_json {
        packet.push(',');
        packet.push_str(data);
    }
    if let Some(offset) = offset {
        packet.push_str(",\"");
        packet.push_str(&offset.to_string());
        packet.push('"');
    }
    packet.push(']');
    packet
}

/// A hub frame `{"type":"name","data":...}` split into its JSON name and JSON data, without
/// parsing the data. Frames are serde's adjacently tagged output (tag first), so the split is
/// by position; anything else is parsed as JSON.
pub fn split_frame(frame: &str) -> Option<(String, Option<String>)> {
    const PREFIX: &str = "{\"type\":\"";
    if let Some(rest) = frame.strip_prefix(PREFIX) {
        if let Some(end) = rest.find('"') {
            let name = &rest[..end];
            if !name.contains('\\') {
                let after = &rest[end + 1..];
                let name_json = format!("\"{name}\"");
                if after == "}" {
                    return Some((name_json, None));
                }
                if let Some(data) = after
                    .strip_prefix(",\"data\":")
                    .and_then(|data| data.strip_suffix('}'))
                {
                    return Some((name_json, Some(data.to_owned())));
                }
            }
        }
    }
    // Not in serde's order: take it apart the slow way.
    let Value::Object(mut object) = serde_json::from_str::<Value>(frame).ok()? else {
        return None;
    };
    let name = match object.remove("type")? {
        Value::String(name) => name,
        _ => return None,
    };
    let name_json = serde_json::to_string(&name).ok()?;
    let data = object.remove("data").map(|data| data.to_string());
    Some((name_json, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn engine_packets_parse_by_their_first_character() {
        assert_eq!(EnginePacket::parse("3"), Ok(EnginePacket::Pong("")));
        assert_eq!(
            EnginePacket::parse("2probe"),
            Ok(EnginePacket::Ping("probe"))
        );
        assert_eq!(EnginePacket::parse("40"), Ok(EnginePacket::Message("0")));
        assert_eq!(EnginePacket::parse("5"), Ok(EnginePacket::Upgrade));
        assert_eq!(EnginePacket::parse("1"), Ok(EnginePacket::Close));
        assert!(EnginePacket::parse("").is_err());
        assert!(EnginePacket::parse("0{}").is_err());
        assert!(EnginePacket::parse("bAAAA").is_err());
    }

    #[test]
    fn socketio_packets_parse_with_namespace_ack_and_data() {
        assert_eq!(
            ClientPacket::parse("0"),
            Ok(ClientPacket::Connect {
                namespace: "/".into(),
                auth: None
            })
        );
        assert_eq!(
            ClientPacket::parse(r#"0{"token":"t"}"#),
            Ok(ClientPacket::Connect {
                namespace: "/".into(),
                auth: Some(json!({"token": "t"}))
            })
        );
        assert_eq!(
            ClientPacket::parse(r#"0/admin,{"token":"t"}"#),
            Ok(ClientPacket::Connect {
                namespace: "/admin".into(),
                auth: Some(json!({"token": "t"}))
            })
        );
        assert_eq!(
            ClientPacket::parse(r#"212["typing",{"receiverId":"b","isTyping":true}]"#),
            Ok(ClientPacket::Event {
                namespace: "/".into(),
                ack: Some(12),
                name: "typing".into(),
                args: vec![json!({"receiverId": "b", "isTyping": true})]
            })
        );
        assert_eq!(
            ClientPacket::parse(r#"2["ping"]"#),
            Ok(ClientPacket::Event {
                namespace: "/".into(),
                ack: None,
                name: "ping".into(),
                args: vec![]
            })
        );
        assert_eq!(
            ClientPacket::parse("1"),
            Ok(ClientPacket::Disconnect {
                namespace: "/".into()
            })
        );
        for bad in [
            "",
            "2",
            "2{}",
            "2[]",
            "2[1]",
            "2[\"a\"",
            "51-[\"a\",{}]",
            "9",
            "299999999999999999999[\"a\"]",
        ] {
            assert!(
                ClientPacket::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn server_packets_have_their_exact_wire_form() {
        assert_eq!(
            open("s", true, 25000, 20000, 65536),
            r#"0{"maxPayload":65536,"pingInterval":25000,"pingTimeout":20000,"sid":"s","upgrades":["websocket"]}"#
        );
        assert_eq!(connected("s", "p"), r#"40{"pid":"p","sid":"s"}"#);
        assert_eq!(
            connect_error("/", "no \"token\""),
            r#"44{"message":"no \"token\""}"#
        );
        assert_eq!(connect_error("/x", "no"), r#"44/x,{"message":"no"}"#);
        assert_eq!(ack(7), "437[]");
        assert_eq!(event("\"pong\"", None, None), r#"42["pong"]"#);
        assert_eq!(
            event("\"newMessage\"", Some(r#"{"a":1}"#), Some(9)),
            r#"42["newMessage",{"a":1},"9"]"#
        );
    }

    #[test]
    fn hub_frames_split_into_name_and_data() {
        assert_eq!(
            split_frame(r#"{"type":"newMessage","data":{"text":"}\"x"}}"#),
            Some(("\"newMessage\"".into(), Some(r#"{"text":"}\"x"}"#.into())))
        );
        assert_eq!(
            split_frame(r#"{"type":"pong"}"#),
            Some(("\"pong\"".into(), None))
        );
        assert_eq!(
            split_frame(r#"{"data":[1],"type":"some new kind"}"#),
            Some(("\"some new kind\"".into(), Some("[1]".into())))
        );
        assert_eq!(split_frame("[1,2]"), None);
        assert_eq!(split_frame(r#"{"data":1}"#), None);
    }
}
