//! `multipart/form-data` (RFC 7578) as the portal's one file upload needs it: the whole body is
//! in memory already (the guard bounds it), parts are found by their boundary, and each part's
//! `name` and `filename` come from its `Content-Disposition`. No streaming, no nested parts.

/// One part of a form.
pub struct Part {
    pub name: String,
    /// The file's name as the browser sent it (file inputs only).
    pub filename: Option<String>,
    pub data: Vec<u8>,
}

/// The boundary of a `multipart/form-data` content type.
pub fn boundary(content_type: &str) -> Option<String> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        let v = v.trim().trim_matches('"');
        (k.trim().eq_ignore_ascii_case("boundary") && !v.is_empty() && v.len() <= 70).then(|| v.to_string())
    })
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (from..=hay.len() - needle.len()).find(|&i| &hay[i..i + needle.len()] == needle)
}

/// `name="x"` (or `filename="y"`) from a `Content-Disposition` value.
fn param(disposition: &str, key: &str) -> Option<String> {
    disposition.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        (k.trim().eq_ignore_ascii_case(key)).then(|| v.trim().trim_matches('"').to_string())
    })
}

/// The parts of a body; `None` when it is not well-formed.
pub fn parse(body: &[u8], boundary: &str) -> Option<Vec<Part>> {
    let delim = format!("--{boundary}").into_bytes();
    let mut at = find(body, &delim, 0)? + delim.len();
    let mut parts = Vec::new();
    loop {
        if body.get(at..at + 2) == Some(b"--") {
            return Some(parts);
        }
        if body.get(at..at + 2) != Some(b"\r\n") {
            return None;
        }
        at += 2;
        let head_end = find(body, b"\r\n\r\n", at)?;
        let head = std::str::from_utf8(&body[at..head_end]).ok()?;
        let disposition = head
            .split("\r\n")
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case("content-disposition")))
            .map(|(_, v)| v.to_string())?;
        if parts.len() >= 32 {
            return None;
        }
        let data_start = head_end + 4;
        let mut end_delim = b"\r\n".to_vec();
        end_delim.extend_from_slice(&delim);
        let data_end = find(body, &end_delim, data_start)?;
        parts.push(Part {
            name: param(&disposition, "name")?,
            filename: param(&disposition, "filename"),
            data: body[data_start..data_end].to_vec(),
        });
        at = data_end + end_delim.len();
    }
}

/// The text of the part `name`, if there is one.
pub fn text<'a>(parts: &'a [Part], name: &str) -> Option<&'a str> {
    parts.iter().find(|p| p.name == name).and_then(|p| std::str::from_utf8(&p.data).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_of_a_browser_form() {
        let b = "----WebKitFormBoundaryx7";
        let body = format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\nabc\r\n\
             --{b}\r\nContent-Disposition: form-data; name=\"keystore\"; filename=\"k.p12\"\r\n\
             Content-Type: application/x-pkcs12\r\n\r\n\x00\r\n--x\x01\r\n\
             --{b}\r\nContent-Disposition: form-data; name=\"alias\"\r\n\r\njwt\r\n--{b}--\r\n"
        );
        assert_eq!(boundary(&format!("multipart/form-data; boundary={b}")).as_deref(), Some(b));
        let parts = parse(body.as_bytes(), b).unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(text(&parts, "csrf_token"), Some("abc"));
        assert_eq!(parts[1].filename.as_deref(), Some("k.p12"));
        assert_eq!(parts[1].data, b"\x00\r\n--x\x01", "binary content, with CRLF and dashes inside");
        assert_eq!(text(&parts, "alias"), Some("jwt"));
        assert!(boundary("application/x-www-form-urlencoded").is_none());
        assert!(parse(b"garbage", b).is_none());
        assert!(
            parse(format!("--{b}\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nunterminated").as_bytes(), b)
                .is_none()
        );
    }
}
