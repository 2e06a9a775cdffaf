//! Reading the charts back in tests: an SVG must parse as XML, and what a reader sees of it
//! is the text of its `<text>` elements.

/// Parses an SVG file as XML (failing on any syntax error) and returns the text of its
/// `<text>` elements.
pub fn svg_text(path: &std::path::Path) -> Vec<String> {
    use quick_xml::events::Event;
    let svg = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{path:?}: {error}"));
    let mut reader = quick_xml::Reader::from_str(&svg);
    let (mut texts, mut in_text, mut root) = (Vec::new(), false, None);
    loop {
        match reader.read_event() {
            Ok(Event::Start(element)) => {
                let name = String::from_utf8_lossy(element.name().as_ref()).into_owned();
                in_text = name == "text";
                root.get_or_insert(name);
            }
            Ok(Event::Text(text)) if in_text => {
                texts.push(text.decode().unwrap().into_owned());
            }
            Ok(Event::End(_)) => in_text = false,
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(error) => panic!("{path:?} is not well-formed XML: {error}"),
        }
    }
    assert_eq!(root.as_deref(), Some("svg"), "{path:?}");
    texts
}
