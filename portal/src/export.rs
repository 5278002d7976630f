//! Exports: the Interactions report as CSV or XLSX (compliance-recorder F-79: report header,
//! then the 27 columns in the spec's order), the audit trail as CSV, and the HTML index of a
//! bulk ZIP (media-manager F-74: opens offline and plays the files beside it).

use callvault_store::db::{AuditEntry, Note, Recording, RecordingStatus, Tag};
use chrono::{DateTime, SecondsFormat, Utc};

/// The report's columns, in the spec's order.
pub const COLUMNS: [&str; 27] = [
    "Call Id",
    "Target Display Name",
    "Target Upn",
    "OnBehalfOf",
    "TransferredBy",
    "TransferredTo",
    "Called Party",
    "Calling Party",
    "Answered By",
    "Answered time",
    "Start Time",
    "Release Time",
    "SipCallId",
    "SysCallId",
    "Call Direction",
    "Call Type",
    "Release Cause",
    "Notes",
    "Participants",
    "Files",
    "Media Audio Status",
    "Expiration",
    "QueueName",
    "DoubleRecordingType",
    "PairedCall",
    "Tags",
    "Call Link",
];

/// ISO-8601 UTC with milliseconds, as the spec's export shows ("2024-06-13T10:08:05.058Z").
pub fn iso(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn opt_iso(micros: Option<i64>) -> String {
    micros.map(iso).unwrap_or_default()
}

fn party(number: &str, name: &str) -> String {
    match (number.is_empty(), name.is_empty()) {
        (false, false) => format!("{name} <{number}>"),
        (true, _) => name.to_owned(),
        (false, true) => number.to_owned(),
    }
}

/// Everything one report row shows about a call.
#[derive(Debug, Clone)]
pub struct Row<'a> {
    pub rec: &'a Recording,
    pub owner_display: String,
    pub owner_username: String,
    pub notes: Vec<Note>,
    pub tags: Vec<Tag>,
}

/// "Media Audio Status" as the portal shows it (a live call reads "Recording").
fn status_label(status: RecordingStatus) -> &'static str {
    match status {
        RecordingStatus::Recording => "Recording",
        RecordingStatus::Pending => "Pending",
        RecordingStatus::Available => "Available",
        RecordingStatus::Incomplete => "Incomplete",
        RecordingStatus::Deleted => "Deleted",
    }
}

/// The 27 cells of a row.
pub fn cells(row: &Row<'_>, public_url: &str) -> Vec<String> {
    let r = row.rec;
    vec![
        r.id.to_string(),
        row.owner_display.clone(),
        row.owner_username.clone(),
        r.on_behalf_of.clone(),
        r.transferred_by.clone(),
        r.transferred_to.clone(),
        party(&r.called.number, &r.called.name),
        party(&r.calling.number, &r.calling.name),
        party(&r.answering.number, &r.answering.name),
        opt_iso(r.answer_time),
        iso(r.start_time),
        opt_iso(r.end_time),
        r.sip_call_id.clone(),
        r.call_id.clone(),
        r.direction.as_str().to_owned(),
        r.call_type.as_str().to_owned(),
        r.release_cause
            .map(|c| c.as_str().to_owned())
            .unwrap_or_default(),
        row.notes
            .iter()
            .map(|n| n.body.as_str())
            .collect::<Vec<_>>()
            .join("; "),
        r.participants
            .iter()
            .map(|p| party(&p.number, &p.name))
            .collect::<Vec<_>>()
            .join(";"),
        r.object_key.clone().unwrap_or_default(),
        status_label(r.status).to_owned(),
        opt_iso(r.expires_at),
        r.queue_name.clone(),
        "Primary".to_owned(),
        String::new(),
        row.tags
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join("; "),
        // The UI is one page routed by the fragment: this is the address its call screen has.
        format!("{}/#/calls/{}", public_url.trim_end_matches('/'), r.id),
    ]
}

/// Whether a spreadsheet could take a cell for a formula (OWASP's CSV injection list: a
/// leading `=`, `+`, `-`, `@`, tab or carriage return). `+1+HYPERLINK(...)` is one, so a
/// leading sign is defused even before a digit: a phone number then shows as `'+4420...`
/// in a text editor and as `+4420...` in a spreadsheet, which also keeps its plus.
pub fn formula_like(value: &str) -> bool {
    value.starts_with(['=', '+', '-', '@', '\t', '\r'])
}

/// One CSV field: quoted when needed; a [`formula_like`] value gets a leading `'` so
/// spreadsheets show it as text and never run it.
pub fn csv_field(value: &str) -> String {
    let mut v = value.to_owned();
    if formula_like(&v) {
        v.insert(0, '\'');
    }
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
}

fn csv_line(cells: &[String]) -> String {
    let mut line = cells
        .iter()
        .map(|c| csv_field(c))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

/// The report header lines (F-79): title, requester, creation time, and the search
/// criteria when the export came from a search.
fn header_lines(requested_by: &str, created_at: i64, criteria: Option<&str>) -> Vec<Vec<String>> {
    let mut out = vec![
        vec!["Report Header".to_owned()],
        vec!["Requested By".to_owned(), requested_by.to_owned()],
        vec!["Created At".to_owned(), iso(created_at)],
    ];
    if let Some(c) = criteria {
        out.push(vec!["Search Criteria".to_owned(), c.to_owned()]);
    }
    out
}

/// The Interactions report as CSV.
pub fn report_csv(
    rows: &[Row<'_>],
    requested_by: &str,
    created_at: i64,
    criteria: Option<&str>,
    public_url: &str,
) -> String {
    let mut out = String::new();
    for l in header_lines(requested_by, created_at, criteria) {
        out.push_str(&csv_line(&l));
    }
    out.push_str(&csv_line(
        &COLUMNS.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>(),
    ));
    for row in rows {
        out.push_str(&csv_line(&cells(row, public_url)));
    }
    out
}

/// The Interactions report as an XLSX workbook (one sheet, same layout as the CSV). Every
/// cell is a string, never a formula; a [`formula_like`] one also carries Excel's quote prefix
/// (the cell's text unchanged, marked as typed with a leading `'`), so editing it or saving the
/// sheet again does not turn it into a formula.
pub fn report_xlsx(
    rows: &[Row<'_>],
    requested_by: &str,
    created_at: i64,
    criteria: Option<&str>,
    public_url: &str,
) -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
    let mut wb = rust_xlsxwriter::Workbook::new();
    let sheet = wb.add_worksheet();
    sheet.set_name("Interactions")?;
    let bold = rust_xlsxwriter::Format::new().set_bold();
    let text = rust_xlsxwriter::Format::new().set_quote_prefix();
    let header = header_lines(requested_by, created_at, criteria);
    let header_rows = header.len() as u32;
    let lines = header
        .into_iter()
        .chain(rows.iter().map(|row| cells(row, public_url)));
    for (r, line) in (0u32..).zip(lines) {
        // The column titles sit between the report header and the rows.
        let r = if r < header_rows { r } else { r + 1 };
        for (c, v) in (0u16..).zip(&line) {
            if formula_like(v) {
                sheet.write_string_with_format(r, c, v, &text)?;
            } else {
                sheet.write_string(r, c, v)?;
            }
        }
    }
    for (c, v) in (0u16..).zip(COLUMNS) {
        sheet.write_string_with_format(header_rows, c, v, &bold)?;
    }
    wb.save_to_buffer()
}

/// The audit trail as CSV (filters applied by the caller).
pub fn audit_csv(entries: &[AuditEntry], requested_by: &str, created_at: i64) -> String {
    let mut out = String::new();
    for l in header_lines(requested_by, created_at, None) {
        out.push_str(&csv_line(&l));
    }
    out.push_str(&csv_line(
        &[
            "Seq",
            "Date and Time",
            "Name",
            "Impersonated By",
            "Action",
            "Item",
            "Item Id",
            "Description",
            "Hash",
        ]
        .map(str::to_owned),
    ));
    for e in entries {
        out.push_str(&csv_line(&[
            e.seq.to_string(),
            iso(e.time),
            e.actor.clone(),
            e.impersonator.clone().unwrap_or_default(),
            e.action.clone(),
            e.item_type.clone(),
            e.item_id.clone(),
            e.details.clone(),
            e.hash.clone(),
        ]));
    }
    out
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The `index.html` of a bulk ZIP: the calls' details, each with a player for its file
/// (`file` relative to the index) when the file is playable.
pub fn zip_index(
    entries: &[(&Recording, String, bool)],
    requested_by: &str,
    created_at: i64,
) -> String {
    let mut rows = String::new();
    for (r, file, playable) in entries {
        let media = if *playable {
            format!(
                "<audio controls preload=\"none\" src=\"{0}\"></audio><br><a href=\"{0}\">{0}</a>",
                html_escape(file)
            )
        } else {
            format!(
                "{} (encrypted: decrypt with <code>callvault verify --key</code>)",
                html_escape(file)
            )
        };
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            html_escape(&iso(r.start_time)),
            html_escape(&party(&r.calling.number, &r.calling.name)),
            html_escape(&party(&r.called.number, &r.called.name)),
            html_escape(r.direction.as_str()),
            r.duration_ms / 1000,
            html_escape(&r.id.to_string()),
            media
        ));
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>CallVault recordings</title>\
         <style>body{{font-family:sans-serif}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}</style></head><body>\n\
         <h1>CallVault recordings</h1>\n<p>Requested by {} at {}. {} call(s).</p>\n\
         <table><thead><tr><th>Start</th><th>Calling party</th><th>Called party</th>\
         <th>Direction</th><th>Duration (s)</th><th>Recording id</th><th>Audio</th></tr></thead>\
         <tbody>\n{}</tbody></table>\n</body></html>\n",
        html_escape(requested_by),
        html_escape(&iso(created_at)),
        entries.len(),
        rows
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        for (value, defused) in [
            ("=SUM(A1)", "'=SUM(A1)"),
            (
                "+1+HYPERLINK(\"http://x\")",
                "\"'+1+HYPERLINK(\"\"http://x\"\")\"",
            ),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "\"'\r=1\""),
            ("+15551234", "'+15551234"),
        ] {
            assert_eq!(csv_field(value), defused, "{value:?}");
        }
        assert_eq!(csv_field("a=b"), "a=b", "only the first character matters");
    }

    #[test]
    fn iso_has_milliseconds_and_z() {
        assert_eq!(iso(1_718_273_285_058_000), "2024-06-13T10:08:05.058Z");
    }

    #[test]
    fn html_index_escapes() {
        let r = sample();
        let html = zip_index(&[(&r, "a<b>.ogg".to_owned(), true)], "<eve>", 0);
        assert!(html.contains("a&lt;b&gt;.ogg"));
        assert!(html.contains("&lt;eve&gt;"));
    }

    fn sample() -> Recording {
        use callvault_store::db::{CallType, Direction, Party};
        Recording {
            tenant: "t".into(),
            id: uuid::Uuid::nil(),
            call_id: "c".into(),
            sip_call_id: String::new(),
            session_id: String::new(),
            segment: 0,
            start_time: 0,
            answer_time: None,
            end_time: None,
            duration_ms: 0,
            wait_ms: None,
            direction: Direction::Inbound,
            call_type: CallType::Unknown,
            calling: Party::default(),
            called: Party::default(),
            answering: Party::default(),
            on_behalf_of: String::new(),
            transferred_by: String::new(),
            transferred_to: String::new(),
            queue_name: String::new(),
            participants: vec![],
            release_cause: None,
            stop_reason: None,
            owner_user_id: None,
            owner_item: String::new(),
            agents: vec![],
            skills: vec![],
            profile: String::new(),
            storage_target: String::new(),
            object_key: None,
            size_bytes: None,
            codec: String::new(),
            channels: 0,
            sha256: None,
            metadata_digest: None,
            signature: None,
            key_id: None,
            expires_at: None,
            legal_hold: false,
            legal_hold_effective: false,
            assurance: false,
            delete_mode: None,
            delete_requested_by: None,
            delete_authorised_by: None,
            delete_note: None,
            delete_requested_at: None,
            deleted_at: None,
            status: RecordingStatus::Available,
            raw_metadata: None,
            created_at: 0,
            updated_at: 0,
        }
    }
}
