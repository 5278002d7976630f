//! The Interactions search: every filter of compliance-recorder F-63..F-75 and media-manager
//! F-71/F-72, the caller's access scope applied in SQL, and keyset pagination.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::exec::Arg;
use super::model::{CallType, Direction, Recording, RecordingStatus, ReleaseCause};
use super::recordings::{RECORDING_COLUMNS, RECORDING_FROM, recording_from_row};
use super::{Db, DbError, Result, invalid, like_escape, word_norm};

/// Which calls the caller may see at all (the AccessProfile's `calls.scope`). The portal resolves
/// it; the search applies it in SQL so that no row outside it can be returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessScope {
    None,
    /// Calls owned by the user.
    Own {
        user_id: Uuid,
    },
    /// Calls owned by the user, plus calls recorded for any of `groups` (the groups captured on
    /// the recording at call time).
    OwnAndGroups {
        user_id: Uuid,
        groups: Vec<Uuid>,
    },
    All,
}

/// Comparison for the duration filter (media-manager F-72).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DurationOp {
    #[serde(rename = "=")]
    Eq,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">=")]
    Ge,
}

/// Duration in whole seconds, compared as displayed: a 30.7 s call "= 30", "<= 30" and "> 29".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurationFilter {
    pub op: DurationOp,
    pub seconds: i64,
}

impl DurationFilter {
    /// The half-open millisecond range `[lo, hi)` the filter accepts (`None` = unbounded).
    pub fn millis_range(self) -> (Option<i64>, Option<i64>) {
        let s = self.seconds.saturating_mul(1000);
        let next = self.seconds.saturating_add(1).saturating_mul(1000);
        match self.op {
            DurationOp::Eq => (Some(s), Some(next)),
            DurationOp::Lt => (None, Some(s)),
            DurationOp::Le => (None, Some(next)),
            DurationOp::Gt => (Some(next), None),
            DurationOp::Ge => (Some(s), None),
        }
    }
}

/// How several tags combine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TagMatch {
    #[default]
    Any,
    All,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortKey {
    #[default]
    StartTime,
    Duration,
    CallingParty,
    CalledParty,
    AnsweringParty,
}

impl SortKey {
    fn column(self) -> &'static str {
        match self {
            SortKey::StartTime => "r.start_time",
            SortKey::Duration => "r.duration_ms",
            SortKey::CallingParty => "r.calling_number",
            SortKey::CalledParty => "r.called_number",
            SortKey::AnsweringParty => "r.answering_number",
        }
    }

    fn value_of(self, rec: &Recording) -> CursorValue {
        match self {
            SortKey::StartTime => CursorValue::Int(rec.start_time),
            SortKey::Duration => CursorValue::Int(rec.duration_ms),
            SortKey::CallingParty => CursorValue::Text(rec.calling.number.clone()),
            SortKey::CalledParty => CursorValue::Text(rec.called.number.clone()),
            SortKey::AnsweringParty => CursorValue::Text(rec.answering.number.clone()),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortDirection {
    Asc,
    #[default]
    Desc,
}

/// A party filter as typed by the user (compliance-recorder F-69):
/// - `732` matches 732 anywhere in the number or the name;
/// - `732*` matches numbers or names starting with 732;
/// - `*Bill` matches names containing the word Bill (and numbers ending with it);
/// - `*x*` is the same as `x`; other `*` placements match any run of characters.
///
/// Names compare case- and punctuation-insensitively; `%`, `_` and `?` are literal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PartyPattern(pub String);

/// LIKE patterns for a party's number column and normalised-name column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartyLike {
    pub number: String,
    pub name: Option<String>,
}

impl PartyPattern {
    /// Compiles to LIKE patterns (`ESCAPE '\'`); `None` when the pattern matches everything.
    pub(crate) fn compile(&self) -> Option<PartyLike> {
        let text = self.0.trim();
        let lead = text.starts_with('*');
        let trail = text.len() > 1 && text.ends_with('*');
        let core = text.trim_matches('*');
        if core.is_empty() {
            return None;
        }
        let inner = core.contains('*');
        let norm = |piece: &str| like_escape(word_norm(piece).trim());
        let number_esc = |piece: &str| like_escape(&piece.to_lowercase());
        if !inner {
            let n = norm(core);
            let name = (!n.is_empty()).then_some(());
            return Some(match (lead, trail) {
                (false, false) | (true, true) => PartyLike {
                    number: format!("%{}%", number_esc(core)),
                    name: name.map(|_| format!("%{n}%")),
                },
                (false, true) => PartyLike {
                    number: format!("{}%", number_esc(core)),
                    name: name.map(|_| format!(" {n}%")),
                },
                (true, false) => PartyLike {
                    number: format!("%{}", number_esc(core)),
                    name: name.map(|_| format!("% {n} %")),
                },
            });
        }
        let pieces: Vec<&str> = core.split('*').collect();
        let number = format!(
            "{}{}{}",
            if lead { "%" } else { "" },
            pieces
                .iter()
                .map(|p| number_esc(p))
                .collect::<Vec<_>>()
                .join("%"),
            if trail { "%" } else { "" }
        );
        let name_pieces: Vec<String> = pieces.iter().map(|p| norm(p)).collect();
        let name = if name_pieces.iter().all(String::is_empty) {
            None
        } else {
            Some(format!(
                "{}{}{}",
                if lead { "%" } else { " " },
                name_pieces.join("%"),
                if trail { "%" } else { " " }
            ))
        };
        Some(PartyLike { number, name })
    }
}

/// Every Interactions filter. Empty lists and `None` mean "no filter". Saved queries store this
/// struct as JSON (without scope or cursor, which belong to the request).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SearchQuery {
    /// Start time at or after (µs since epoch).
    pub from: Option<i64>,
    /// Start time before (µs since epoch).
    pub to: Option<i64>,
    pub duration: Option<DurationFilter>,
    pub directions: Vec<Direction>,
    pub calling: Option<PartyPattern>,
    pub called: Option<PartyPattern>,
    /// Either calling or called party (the combined "Called or Calling Party" filter).
    pub calling_or_called: Option<PartyPattern>,
    pub answering: Option<PartyPattern>,
    /// Substring of a participant's name or number, case-insensitive.
    pub participant: Option<String>,
    /// Calls owned by any of these users or recorded for any of these groups.
    pub users: Vec<Uuid>,
    pub groups: Vec<Uuid>,
    /// Only calls not assigned to any user.
    pub unassigned: bool,
    pub tags: Vec<Uuid>,
    pub tag_match: TagMatch,
    /// Whole words (a phrase of whole words) in any note of the call.
    pub notes: Option<String>,
    pub call_types: Vec<CallType>,
    pub release_causes: Vec<ReleaseCause>,
    pub statuses: Vec<RecordingStatus>,
    /// Free text (media-manager F-71): comma-separated values, a call matches if any value occurs
    /// in its parties, participants, agents, owner item, skills or call ids.
    pub text: Option<String>,
    /// Substring of the call's transcript text.
    pub transcript: Option<String>,
    /// Recording assurance test calls only. They are left out of every search without it, so
    /// daily test calls never crowd the real ones. The caller's scope still applies: test calls
    /// belong to no user, so only a scope over unassigned calls (an admin's) finds them.
    pub assurance: bool,
    pub sort: SortKey,
    pub direction: SortDirection,
}

/// One page of results; `next_cursor` is `None` on the last page.
#[derive(Debug, Clone)]
pub struct SearchPage {
    pub items: Vec<Recording>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
enum CursorValue {
    Int(i64),
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    sort: SortKey,
    dir: SortDirection,
    value: CursorValue,
    id: Uuid,
}

impl Cursor {
    fn encode(&self) -> String {
        hex::encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(text: &str, q: &SearchQuery) -> Result<Self> {
        let bytes = hex::decode(text).map_err(|_| DbError::BadCursor)?;
        let c: Cursor = serde_json::from_slice(&bytes).map_err(|_| DbError::BadCursor)?;
        let kind_ok = matches!(
            (&c.value, c.sort),
            (CursorValue::Int(_), SortKey::StartTime | SortKey::Duration)
                | (
                    CursorValue::Text(_),
                    SortKey::CallingParty | SortKey::CalledParty | SortKey::AnsweringParty
                )
        );
        if c.sort != q.sort || c.dir != q.direction || !kind_ok {
            return Err(DbError::BadCursor);
        }
        Ok(c)
    }
}

/// Accumulates WHERE conditions and their `$N` arguments.
#[derive(Debug, Default)]
pub(crate) struct Where {
    conds: Vec<String>,
    args: Vec<Arg>,
}

impl Where {
    fn arg(&mut self, a: impl Into<Arg>) -> String {
        self.args.push(a.into());
        format!("${}", self.args.len())
    }

    fn list(&mut self, items: impl IntoIterator<Item = Arg>) -> String {
        let ph: Vec<String> = items.into_iter().map(|a| self.arg(a)).collect();
        ph.join(", ")
    }

    fn push(&mut self, cond: String) {
        self.conds.push(cond);
    }

    fn party(&mut self, prefix: &str, pattern: &PartyPattern) -> Option<String> {
        let like = pattern.compile()?;
        let n = self.arg(like.number);
        let mut cond = format!("lower(r.{prefix}_number) LIKE {n} ESCAPE '\\'");
        if let Some(name) = like.name {
            let p = self.arg(name);
            cond = format!("({cond} OR r.{prefix}_norm LIKE {p} ESCAPE '\\')");
        }
        Some(cond)
    }

    fn sql(&self) -> String {
        self.conds.join(" AND ")
    }
}

fn groups_exists(w: &mut Where, groups: &[Uuid]) -> String {
    let list = w.list(groups.iter().map(|g| Arg::Uuid(*g)));
    format!(
        "EXISTS (SELECT 1 FROM recording_groups g WHERE g.tenant = r.tenant \
         AND g.recording_id = r.id AND g.group_id IN ({list}))"
    )
}

/// A user's own calls: those they own and the meetings they attended.
fn own_calls(w: &mut Where, user: Uuid) -> String {
    let u = w.arg(user);
    format!(
        "(r.owner_user_id = {u} OR EXISTS (SELECT 1 FROM recording_attendees a \
         WHERE a.tenant = r.tenant AND a.recording_id = r.id AND a.user_id = {u}))"
    )
}

/// Builds the WHERE clause (tenant, scope, every filter). Pure, so the rules are unit-tested.
pub(crate) fn build_where(tenant: &str, scope: &AccessScope, q: &SearchQuery) -> Result<Where> {
    let mut w = Where::default();
    let t = w.arg(tenant);
    w.push(format!("r.tenant = {t}"));
    let a = w.arg(q.assurance);
    w.push(format!("r.assurance = {a}"));

    match scope {
        AccessScope::None => w.push("1 = 0".to_owned()),
        AccessScope::All => {}
        AccessScope::Own { user_id } => {
            let own = own_calls(&mut w, *user_id);
            w.push(own);
        }
        AccessScope::OwnAndGroups { user_id, groups } => {
            let own = own_calls(&mut w, *user_id);
            if groups.is_empty() {
                w.push(own);
            } else {
                let g = groups_exists(&mut w, groups);
                w.push(format!("({own} OR {g})"));
            }
        }
    }

    if let (Some(from), Some(to)) = (q.from, q.to)
        && from > to
    {
        return Err(invalid("date range", "the start is after the end"));
    }
    if let Some(from) = q.from {
        let p = w.arg(from);
        w.push(format!("r.start_time >= {p}"));
    }
    if let Some(to) = q.to {
        let p = w.arg(to);
        w.push(format!("r.start_time < {p}"));
    }
    if let Some(d) = q.duration {
        if d.seconds < 0 {
            return Err(invalid("duration", "seconds must not be negative"));
        }
        let (lo, hi) = d.millis_range();
        if let Some(lo) = lo {
            let p = w.arg(lo);
            w.push(format!("r.duration_ms >= {p}"));
        }
        if let Some(hi) = hi {
            let p = w.arg(hi);
            w.push(format!("r.duration_ms < {p}"));
        }
    }
    if !q.directions.is_empty() {
        let l = w.list(q.directions.iter().map(|d| Arg::from(d.as_str())));
        w.push(format!("r.direction IN ({l})"));
    }
    for (prefix, pattern) in [
        ("calling", &q.calling),
        ("called", &q.called),
        ("answering", &q.answering),
    ] {
        if let Some(c) = pattern.as_ref().and_then(|p| w.party(prefix, p)) {
            w.push(c);
        }
    }
    if let Some(p) = &q.calling_or_called
        && let (Some(a), Some(b)) = (w.party("calling", p), w.party("called", p))
    {
        w.push(format!("({a} OR {b})"));
    }
    if let Some(part) = q
        .participant
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let p = w.arg(format!("%{}%", like_escape(&part.to_lowercase())));
        w.push(format!("r.participants_norm LIKE {p} ESCAPE '\\'"));
    }
    if !q.users.is_empty() || !q.groups.is_empty() {
        let mut ors = Vec::new();
        if !q.users.is_empty() {
            let l = w.list(q.users.iter().map(|u| Arg::Uuid(*u)));
            ors.push(format!("r.owner_user_id IN ({l})"));
        }
        if !q.groups.is_empty() {
            ors.push(groups_exists(&mut w, &q.groups));
        }
        w.push(format!("({})", ors.join(" OR ")));
    }
    if q.unassigned {
        w.push("r.owner_user_id IS NULL".to_owned());
    }
    if !q.tags.is_empty() {
        let mut tags = q.tags.clone();
        tags.sort();
        tags.dedup();
        // The call's start time is repeated on its taggings so that the date range narrows the
        // tag's index (tenant, tag_id, start_time) before any recording is read.
        let exists = |w: &mut Where, ids: &[Uuid]| {
            let l = w.list(ids.iter().map(|t| Arg::Uuid(*t)));
            let mut range = String::new();
            if let Some(from) = q.from {
                range += &format!(" AND rt.start_time >= {}", w.arg(from));
            }
            if let Some(to) = q.to {
                range += &format!(" AND rt.start_time < {}", w.arg(to));
            }
            format!(
                "EXISTS (SELECT 1 FROM recording_tags rt WHERE rt.tenant = r.tenant \
                 AND rt.recording_id = r.id AND rt.tag_id IN ({l}){range})"
            )
        };
        match q.tag_match {
            TagMatch::Any => {
                let c = exists(&mut w, &tags);
                w.push(c);
            }
            TagMatch::All => {
                for t in &tags {
                    let c = exists(&mut w, std::slice::from_ref(t));
                    w.push(c);
                }
            }
        }
    }
    if let Some(notes) = &q.notes {
        let words = word_norm(notes);
        let words = words.trim();
        if !words.is_empty() {
            let p = w.arg(format!("% {} %", like_escape(words)));
            w.push(format!(
                "EXISTS (SELECT 1 FROM notes n WHERE n.tenant = r.tenant \
                 AND n.recording_id = r.id AND n.body_norm LIKE {p} ESCAPE '\\')"
            ));
        }
    }
    if !q.call_types.is_empty() {
        let l = w.list(q.call_types.iter().map(|c| Arg::from(c.as_str())));
        w.push(format!("r.call_type IN ({l})"));
    }
    if !q.release_causes.is_empty() {
        let l = w.list(q.release_causes.iter().map(|c| Arg::from(c.as_str())));
        w.push(format!("r.release_cause IN ({l})"));
    }
    if !q.statuses.is_empty() {
        let l = w.list(q.statuses.iter().map(|s| Arg::from(s.as_str())));
        w.push(format!("r.status IN ({l})"));
    }
    if let Some(text) = &q.text {
        let values: Vec<String> = text
            .split(',')
            .map(|v| v.trim().to_lowercase())
            .filter(|v| !v.is_empty())
            .collect();
        if !values.is_empty() {
            let ors: Vec<String> = values
                .iter()
                .map(|v| {
                    let p = w.arg(format!("%{}%", like_escape(v)));
                    format!("r.search_text LIKE {p} ESCAPE '\\'")
                })
                .collect();
            w.push(format!("({})", ors.join(" OR ")));
        }
    }
    if let Some(tr) = q
        .transcript
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let p = w.arg(format!("%{}%", like_escape(&tr.to_lowercase())));
        w.push(format!(
            "EXISTS (SELECT 1 FROM transcripts tr WHERE tr.tenant = r.tenant \
             AND tr.recording_id = r.id AND lower(tr.body) LIKE {p} ESCAPE '\\')"
        ));
    }
    Ok(w)
}

/// Largest page the search returns.
pub const MAX_PAGE: u32 = 1000;

impl Db {
    /// One page of the tenant's recordings that match `q` within `scope`, in `q.sort` order.
    /// Pass the previous page's `next_cursor` to continue; rows inserted meanwhile never shift
    /// or repeat rows (keyset pagination on the sort value and the id).
    pub async fn search_recordings(
        &self,
        tenant: &str,
        scope: &AccessScope,
        q: &SearchQuery,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<SearchPage> {
        if limit == 0 || limit > MAX_PAGE {
            return Err(invalid("limit", format!("must be 1..={MAX_PAGE}")));
        }
        let mut w = build_where(tenant, scope, q)?;
        let col = q.sort.column();
        let (cmp, order) = match q.direction {
            SortDirection::Asc => (">", "ASC"),
            SortDirection::Desc => ("<", "DESC"),
        };
        if let Some(c) = cursor {
            let c = Cursor::decode(c, q)?;
            let v = match c.value {
                CursorValue::Int(i) => w.arg(i),
                CursorValue::Text(s) => w.arg(s),
            };
            let id = w.arg(c.id);
            w.push(format!("({col}, r.id) {cmp} ({v}, {id})"));
        }
        let lim = w.arg(i64::from(limit) + 1);
        let sql = format!(
            "SELECT {RECORDING_COLUMNS} FROM {RECORDING_FROM} WHERE {} \
             ORDER BY {col} {order}, r.id {order} LIMIT {lim}",
            w.sql()
        );
        let mut items = self.rows(&sql, &w.args, recording_from_row).await?;
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        let next_cursor = match items.last() {
            Some(last) if more => Some(
                Cursor {
                    sort: q.sort,
                    dir: q.direction,
                    value: q.sort.value_of(last),
                    id: last.id,
                }
                .encode(),
            ),
            _ => None,
        };
        Ok(SearchPage { items, next_cursor })
    }

    /// How many recordings match (the "Total Recordings" header).
    pub async fn count_recordings(
        &self,
        tenant: &str,
        scope: &AccessScope,
        q: &SearchQuery,
    ) -> Result<i64> {
        let w = build_where(tenant, scope, q)?;
        let sql = format!("SELECT COUNT(*) AS n FROM recordings r WHERE {}", w.sql());
        Ok(self.row(&sql, &w.args, |r| r.i64("n")).await?.unwrap_or(0))
    }

    /// The SQL and arguments of a search, for EXPLAIN in benchmarks.
    #[doc(hidden)]
    pub fn search_sql(
        tenant: &str,
        scope: &AccessScope,
        q: &SearchQuery,
        limit: u32,
    ) -> Result<(String, usize)> {
        let mut w = build_where(tenant, scope, q)?;
        let col = q.sort.column();
        let order = match q.direction {
            SortDirection::Asc => "ASC",
            SortDirection::Desc => "DESC",
        };
        let lim = w.arg(i64::from(limit) + 1);
        Ok((
            format!(
                "SELECT r.id FROM recordings r WHERE {} ORDER BY {col} {order}, r.id {order} LIMIT {lim}",
                w.sql()
            ),
            w.args.len(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn like(p: &str) -> Option<PartyLike> {
        PartyPattern(p.to_owned()).compile()
    }

    #[test]
    fn party_patterns_follow_the_spec() {
        let contains = like("732").expect("pattern");
        assert_eq!(contains.number, "%732%");
        let prefix = like("732*").expect("pattern");
        assert_eq!(prefix.number, "732%");
        let word = like("*Bill").expect("pattern");
        assert_eq!(word.name.as_deref(), Some("% bill %"));
        assert_eq!(word.number, "%bill");
        let both = like("*ill*").expect("pattern");
        assert_eq!(both.name.as_deref(), Some("%ill%"));
        assert!(like("*").is_none());
        assert!(like("  ").is_none());
    }

    #[test]
    fn like_metacharacters_are_literal() {
        let p = like("50%_?").expect("pattern");
        assert_eq!(p.number, r"%50\%\_?%");
    }

    #[test]
    fn inner_wildcards_match_runs() {
        let p = like("+1*555*").expect("pattern");
        assert_eq!(p.number, "+1%555%");
    }

    #[test]
    fn duration_ranges_compare_whole_seconds() {
        let f = |op, seconds| DurationFilter { op, seconds }.millis_range();
        assert_eq!(f(DurationOp::Eq, 30), (Some(30_000), Some(31_000)));
        assert_eq!(f(DurationOp::Lt, 30), (None, Some(30_000)));
        assert_eq!(f(DurationOp::Le, 30), (None, Some(31_000)));
        assert_eq!(f(DurationOp::Gt, 30), (Some(31_000), None));
        assert_eq!(f(DurationOp::Ge, 30), (Some(30_000), None));
    }

    #[test]
    fn scope_none_matches_nothing_and_tenant_is_always_bound() {
        let w = build_where("t1", &AccessScope::None, &SearchQuery::default()).expect("where");
        assert!(w.sql().starts_with("r.tenant = $1"));
        assert!(w.sql().contains("1 = 0"));
    }

    #[test]
    fn cursor_of_another_sort_is_rejected() {
        let c = Cursor {
            sort: SortKey::Duration,
            dir: SortDirection::Desc,
            value: CursorValue::Int(5),
            id: Uuid::nil(),
        }
        .encode();
        let q = SearchQuery::default();
        assert!(matches!(Cursor::decode(&c, &q), Err(DbError::BadCursor)));
        assert!(matches!(Cursor::decode("zz", &q), Err(DbError::BadCursor)));
    }
}
