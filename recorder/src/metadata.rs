//! SIPREC recording metadata (RFC 7865 XML carried per RFC 7866).
//!
//! Sources disagree on namespaces (`urn:ietf:params:xml:ns:recording:1`,
//! without `:1`, older `...:siprec`), prefixes, attribute names (`stream_id`
//! or draft-era `id`) and where send/recv live, so elements are matched by
//! local name only. Unknown elements (vendor `extensiondata`, `callData`...)
//! are kept as raw XML. DOCTYPEs are refused, so no entity can be defined,
//! expanded or fetched.

use quick_xml::events::Event;
use quick_xml::reader::Reader;
use thiserror::Error;

/// Metadata documents are a few KiB; anything near this is hostile.
pub const MAX_METADATA_BYTES: usize = 1024 * 1024;
const MAX_DEPTH: usize = 32;
const MAX_ELEMENTS: usize = 20_000;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MetadataError {
    #[error("metadata of {0} bytes exceeds the {MAX_METADATA_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("malformed XML at byte {position}: {reason}")]
    Xml { position: u64, reason: String },
    #[error("DOCTYPE is not allowed in recording metadata")]
    Doctype,
    #[error("unknown entity &{0};")]
    UnknownEntity(String),
    #[error("XML nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("more than {MAX_ELEMENTS} XML elements")]
    TooManyElements,
    #[error("no root element")]
    NoRoot,
    #[error("root element is <{0}>, not <recording>")]
    NotRecording(String),
    #[error("unknown datamode {0:?} (expected complete or partial)")]
    BadDataMode(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataMode {
    #[default]
    Complete,
    Partial,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Group {
    pub id: String,
    pub associate_time: Option<String>,
    pub extensions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Session {
    pub id: String,
    pub group_ref: Option<String>,
    pub sip_session_ids: Vec<String>,
    pub start_time: Option<String>,
    pub stop_time: Option<String>,
    pub extensions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Participant {
    pub id: String,
    /// Address of record from `nameID aor=`, e.g. `sip:+4420...@sbc`.
    pub aor: Option<String>,
    pub name: Option<String>,
    /// Stream ids this participant sends / receives.
    pub send: Vec<String>,
    pub recv: Vec<String>,
    /// Whether the participant left the session (`Some(true)`: a `disassociate-time`), joined
    /// or rejoined it (`Some(false)`), or the document does not say (`None`).
    pub left: Option<bool>,
    pub extensions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stream {
    pub id: String,
    pub session_id: Option<String>,
    /// Matches an SDP `a=label`.
    pub label: Option<String>,
    pub extensions: Vec<String>,
}

/// The recording metadata state of one recording session.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordingMetadata {
    pub datamode: DataMode,
    pub groups: Vec<Group>,
    pub sessions: Vec<Session>,
    pub participants: Vec<Participant>,
    pub streams: Vec<Stream>,
    /// Unknown top-level elements, raw.
    pub extensions: Vec<String>,
}

/// Who sends on an SDP label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelSender<'a> {
    pub label: &'a str,
    pub stream_id: &'a str,
    pub participant: Option<&'a Participant>,
}

/// Minimal element tree; `span` locates the element in the input.
#[derive(Debug, Default)]
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Element>,
    text: String,
    span: (usize, usize),
}

impl Element {
    fn attr(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|n| {
            self.attrs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.as_str())
        })
    }

    fn child_text(&self, name: &str) -> Option<String> {
        self.children
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
            .and_then(|c| non_empty(&c.text))
    }

    fn raw(&self, input: &str) -> String {
        input
            .get(self.span.0..self.span.1)
            .unwrap_or_default()
            .to_owned()
    }
}

fn non_empty(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// Parses an rs-metadata document.
pub fn parse(xml: &[u8]) -> Result<RecordingMetadata, MetadataError> {
    if xml.len() > MAX_METADATA_BYTES {
        return Err(MetadataError::TooLarge(xml.len()));
    }
    let input = std::str::from_utf8(xml).map_err(|e| MetadataError::Xml {
        position: e.valid_up_to() as u64,
        reason: "not valid UTF-8".to_owned(),
    })?;
    let root = build_tree(input)?;
    let name = root.name.to_ascii_lowercase();
    if name != "recording" && name != "recording_metadata" {
        return Err(MetadataError::NotRecording(root.name));
    }
    interpret(&root, input)
}

fn build_tree(input: &str) -> Result<Element, MetadataError> {
    let mut reader = Reader::from_str(input);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    loop {
        let before = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let event = reader.read_event().map_err(|e| MetadataError::Xml {
            position: reader.error_position(),
            reason: e.to_string(),
        })?;
        let after = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(MetadataError::TooManyElements);
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(MetadataError::TooDeep);
                }
                let mut el = Element {
                    name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
                    span: (before, after),
                    ..Element::default()
                };
                for a in e.attributes() {
                    let a = a.map_err(|err| MetadataError::Xml {
                        position: before as u64,
                        reason: err.to_string(),
                    })?;
                    let key = a.key.as_ref();
                    if key.starts_with(b"xmlns") {
                        continue;
                    }
                    let value = a
                        .normalized_value(quick_xml::XmlVersion::default())
                        .map_err(|err| MetadataError::Xml {
                            position: before as u64,
                            reason: err.to_string(),
                        })?;
                    el.attrs.push((
                        String::from_utf8_lossy(a.key.local_name().as_ref()).into_owned(),
                        value.into_owned(),
                    ));
                }
                if matches!(event, Event::Start(_)) {
                    stack.push(el);
                } else {
                    attach(&mut stack, &mut root, el);
                }
            }
            Event::End(_) => {
                let mut el = stack.pop().ok_or(MetadataError::Xml {
                    position: before as u64,
                    reason: "unexpected end tag".to_owned(),
                })?;
                el.span.1 = after;
                attach(&mut stack, &mut root, el);
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    let text = t.xml10_content().map_err(|err| MetadataError::Xml {
                        position: before as u64,
                        reason: err.to_string(),
                    })?;
                    top.text.push_str(&text);
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::GeneralRef(r) => {
                let c = resolve_entity(&r)?;
                if let Some(top) = stack.last_mut() {
                    top.text.push(c);
                }
            }
            Event::DocType(_) => return Err(MetadataError::Doctype),
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
        }
    }
    if let Some(open) = stack.last() {
        return Err(MetadataError::Xml {
            position: input.len() as u64,
            reason: format!("<{}> is never closed", open.name),
        });
    }
    root.ok_or(MetadataError::NoRoot)
}

fn attach(stack: &mut [Element], root: &mut Option<Element>, el: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        // Only the first root counts; a second one is ignored.
        None => {
            if root.is_none() {
                *root = Some(el);
            }
        }
    }
}

fn resolve_entity(r: &quick_xml::events::BytesRef<'_>) -> Result<char, MetadataError> {
    let name = String::from_utf8_lossy(r).into_owned();
    if r.is_char_ref() {
        return r
            .resolve_char_ref()
            .ok()
            .flatten()
            .ok_or(MetadataError::UnknownEntity(name));
    }
    match name.as_str() {
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "amp" => Ok('&'),
        "apos" => Ok('\''),
        "quot" => Ok('"'),
        _ => Err(MetadataError::UnknownEntity(
            name.chars().take(40).collect(),
        )),
    }
}

fn interpret(root: &Element, input: &str) -> Result<RecordingMetadata, MetadataError> {
    let mut md = RecordingMetadata::default();
    for el in &root.children {
        match el.name.to_ascii_lowercase().as_str() {
            "datamode" => {
                md.datamode = match el.text.trim().to_ascii_lowercase().as_str() {
                    "complete" => DataMode::Complete,
                    "partial" => DataMode::Partial,
                    other => {
                        return Err(MetadataError::BadDataMode(other.chars().take(40).collect()));
                    }
                }
            }
            "group" => md.groups.push(group(el, input)),
            "session" => md.sessions.push(session(el, input)),
            "participant" => {
                let p = participant(el, input);
                upsert_participant(&mut md.participants, p);
            }
            "stream" => md.streams.push(stream(el, input)),
            "participantstreamassoc" => {
                let id = el.attr(&["participant_id", "id"]).unwrap_or_default();
                let p = participant_entry(&mut md.participants, id);
                apply_assoc(p, el);
            }
            "participantsessionassoc" => {
                let id = el.attr(&["participant_id", "id"]).unwrap_or_default();
                participant_entry(&mut md.participants, id).left = session_left(el);
            }
            // A known association that carries nothing the recorder uses.
            "sessionrecordingassoc" => {}
            _ => md.extensions.push(el.raw(input)),
        }
    }
    Ok(md)
}

fn group(el: &Element, input: &str) -> Group {
    let mut g = Group {
        id: el.attr(&["group_id", "id"]).unwrap_or_default().to_owned(),
        ..Group::default()
    };
    for c in &el.children {
        match c.name.to_ascii_lowercase().as_str() {
            "associate-time" => g.associate_time = non_empty(&c.text),
            _ => g.extensions.push(c.raw(input)),
        }
    }
    g
}

fn session(el: &Element, input: &str) -> Session {
    let mut s = Session {
        id: el
            .attr(&["session_id", "id"])
            .unwrap_or_default()
            .to_owned(),
        ..Session::default()
    };
    for c in &el.children {
        match c.name.to_ascii_lowercase().as_str() {
            "group-ref" => s.group_ref = non_empty(&c.text),
            "sipsessionid" => s.sip_session_ids.extend(non_empty(&c.text)),
            "start-time" | "associate-time" if s.start_time.is_none() => {
                s.start_time = non_empty(&c.text)
            }
            "start-time" | "associate-time" => {}
            "stop-time" | "disassociate-time" => s.stop_time = non_empty(&c.text),
            _ => s.extensions.push(c.raw(input)),
        }
    }
    s
}

fn participant(el: &Element, input: &str) -> Participant {
    let mut p = Participant {
        id: el
            .attr(&["participant_id", "id"])
            .unwrap_or_default()
            .to_owned(),
        ..Participant::default()
    };
    for c in &el.children {
        match c.name.to_ascii_lowercase().as_str() {
            "nameid" => {
                p.aor = c.attr(&["aor"]).and_then(non_empty);
                p.name = c.child_text("name");
            }
            "aor" => p.aor = non_empty(&c.text),
            "name" => p.name = non_empty(&c.text),
            "send" => p.send.extend(non_empty(&c.text)),
            "recv" => p.recv.extend(non_empty(&c.text)),
            "associate-time" | "disassociate-time" => {}
            _ => p.extensions.push(c.raw(input)),
        }
    }
    p.left = session_left(el);
    p
}

/// Whether an element's `associate-time` / `disassociate-time` children say the participant
/// left (RFC 7865 §6.7): a disassociate-time means left, an associate-time alone (re)joined.
fn session_left(el: &Element) -> Option<bool> {
    let has = |name: &str| {
        el.children
            .iter()
            .any(|c| c.name.eq_ignore_ascii_case(name))
    };
    if has("disassociate-time") {
        Some(true)
    } else if has("associate-time") {
        Some(false)
    } else {
        None
    }
}

fn stream(el: &Element, input: &str) -> Stream {
    let mut s = Stream {
        id: el.attr(&["stream_id", "id"]).unwrap_or_default().to_owned(),
        session_id: el.attr(&["session_id", "session"]).map(str::to_owned),
        ..Stream::default()
    };
    for c in &el.children {
        match c.name.to_ascii_lowercase().as_str() {
            "label" => s.label = non_empty(&c.text),
            "mode" | "associate-time" | "disassociate-time" => {}
            _ => s.extensions.push(c.raw(input)),
        }
    }
    s
}

fn participant_entry<'a>(list: &'a mut Vec<Participant>, id: &str) -> &'a mut Participant {
    let pos = match list.iter().position(|p| p.id == id) {
        Some(pos) => pos,
        None => {
            list.push(Participant {
                id: id.to_owned(),
                ..Participant::default()
            });
            list.len() - 1
        }
    };
    // `pos` was found in or just pushed onto `list`.
    #[allow(clippy::indexing_slicing)]
    &mut list[pos]
}

/// A participantstreamassoc states the participant's current streams; with
/// a disassociate-time it ends them.
fn apply_assoc(p: &mut Participant, el: &Element) {
    let ended = el
        .children
        .iter()
        .any(|c| c.name.eq_ignore_ascii_case("disassociate-time"));
    if ended {
        p.send.clear();
        p.recv.clear();
        return;
    }
    let send: Vec<String> = texts(el, "send");
    let recv: Vec<String> = texts(el, "recv");
    for s in send {
        if !p.send.contains(&s) {
            p.send.push(s);
        }
    }
    for r in recv {
        if !p.recv.contains(&r) {
            p.recv.push(r);
        }
    }
}

fn texts(el: &Element, name: &str) -> Vec<String> {
    el.children
        .iter()
        .filter(|c| c.name.eq_ignore_ascii_case(name))
        .filter_map(|c| non_empty(&c.text))
        .collect()
}

fn upsert_participant(list: &mut Vec<Participant>, p: Participant) {
    let entry = participant_entry(list, &p.id);
    merge_participant(entry, p);
}

fn merge_participant(into: &mut Participant, p: Participant) {
    if p.aor.is_some() {
        into.aor = p.aor;
    }
    if p.name.is_some() {
        into.name = p.name;
    }
    if !p.send.is_empty() || !p.recv.is_empty() {
        into.send = p.send;
        into.recv = p.recv;
    }
    if p.left.is_some() {
        into.left = p.left;
    }
    into.extensions.extend(p.extensions);
}

impl RecordingMetadata {
    /// Applies a later metadata document (re-INVITE or UPDATE): a complete
    /// one replaces the state, a partial one updates the elements it names
    /// and keeps the rest.
    pub fn apply(&mut self, update: RecordingMetadata) {
        if update.datamode == DataMode::Complete {
            *self = update;
            return;
        }
        for g in update.groups {
            match self.groups.iter_mut().find(|x| x.id == g.id) {
                Some(x) => {
                    x.associate_time = g.associate_time.or(x.associate_time.take());
                    x.extensions.extend(g.extensions);
                }
                None => self.groups.push(g),
            }
        }
        for s in update.sessions {
            match self.sessions.iter_mut().find(|x| x.id == s.id) {
                Some(x) => {
                    x.group_ref = s.group_ref.or(x.group_ref.take());
                    x.start_time = x.start_time.take().or(s.start_time);
                    x.stop_time = s.stop_time.or(x.stop_time.take());
                    for id in s.sip_session_ids {
                        if !x.sip_session_ids.contains(&id) {
                            x.sip_session_ids.push(id);
                        }
                    }
                    x.extensions.extend(s.extensions);
                }
                None => self.sessions.push(s),
            }
        }
        for p in update.participants {
            upsert_participant(&mut self.participants, p);
        }
        for s in update.streams {
            match self.streams.iter_mut().find(|x| x.id == s.id) {
                Some(x) => {
                    x.label = s.label.or(x.label.take());
                    x.session_id = s.session_id.or(x.session_id.take());
                    x.extensions.extend(s.extensions);
                }
                None => self.streams.push(s),
            }
        }
        self.extensions.extend(update.extensions);
    }

    pub fn participant(&self, id: &str) -> Option<&Participant> {
        self.participants.iter().find(|p| p.id == id)
    }

    /// For each labelled stream, in document order, the participant sending
    /// on it. When no participant lists the stream in `send` but, in a
    /// two-party call, one participant receives it, the other one sends it.
    pub fn label_senders(&self) -> Vec<LabelSender<'_>> {
        self.streams
            .iter()
            .filter_map(|s| {
                let label = s.label.as_deref()?;
                Some(LabelSender {
                    label,
                    stream_id: &s.id,
                    participant: self.sender_of_stream(&s.id),
                })
            })
            .collect()
    }

    /// The participant sending on the stream with this SDP label.
    pub fn sender_of_label(&self, label: &str) -> Option<&Participant> {
        let stream = self
            .streams
            .iter()
            .find(|s| s.label.as_deref() == Some(label))?;
        self.sender_of_stream(&stream.id)
    }

    fn sender_of_stream(&self, stream_id: &str) -> Option<&Participant> {
        if let Some(p) = self
            .participants
            .iter()
            .find(|p| p.send.iter().any(|s| s == stream_id))
        {
            return Some(p);
        }
        match self.participants.as_slice() {
            [a, b] if a.recv.iter().any(|s| s == stream_id) => Some(b),
            [a, b] if b.recv.iter().any(|s| s == stream_id) => Some(a),
            _ => None,
        }
    }
}
