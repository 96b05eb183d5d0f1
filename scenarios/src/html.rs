//! HTML pages the harness writes for a person's browser, self-contained: the vendored Mermaid
//! (`vendor/mermaid`, see its README) is inlined, so a page draws offline, from a CI artifact
//! too.

use crate::heatmap::escape;

/// Mermaid 11.17.2's browser bundle (`vendor/mermaid/mermaid.min.js`).
pub const MERMAID_JS: &str = include_str!("../../vendor/mermaid/mermaid.min.js");

/// The attribute of `<body>` that says how drawing went once the page's script has run:
/// `rendered`, or `failed: <Mermaid's error>`.
pub const RENDER_STATE_ATTRIBUTE: &str = "data-mermaid";

/// A page titled `title` that draws `mermaid_text` (a diagram in Mermaid's language, e.g. a
/// `sequenceDiagram`) with the inlined Mermaid, at its natural size (wide diagrams scroll
/// rather than shrink), and then sets [`RENDER_STATE_ATTRIBUTE`] on `<body>`.
pub fn page_with_mermaid(title: &str, mermaid_text: &str) -> String {
    let state = RENDER_STATE_ATTRIBUTE
        .strip_prefix("data-")
        .unwrap_or(RENDER_STATE_ATTRIBUTE);
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{title}</title>\n\
         <style>body {{ font-family: sans-serif; margin: 1em; background: #fff; }}</style>\n\
         </head>\n<body>\n<h1>{title}</h1>\n<pre class=\"mermaid\">\n{diagram}</pre>\n\
         <script>\n{MERMAID_JS}\n</script>\n\
         <script>\n\
         mermaid.initialize({{ startOnLoad: false, securityLevel: \"strict\", \
         sequence: {{ useMaxWidth: false }}, flowchart: {{ useMaxWidth: false }} }});\n\
         mermaid.run()\n  \
         .then(() => {{ document.body.dataset.{state} = \"rendered\"; }})\n  \
         .catch((error) => {{ document.body.dataset.{state} = \"failed: \" + \
         ((error && (error.message || error.str)) || String(error)); }});\n\
         </script>\n</body>\n</html>\n",
        title = escape(title),
        diagram = escape(mermaid_text),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_holds_mermaid_and_the_escaped_diagram() {
        let page = page_with_mermaid("a <b> & c", "sequenceDiagram\n    a->>b: x #gt; y <br/>\n");
        assert!(
            page.contains("<title>a &lt;b&gt; &amp; c</title>"),
            "{page}"
        );
        assert!(
            page.contains(
                "<pre class=\"mermaid\">\nsequenceDiagram\n    a-&gt;&gt;b: x #gt; y &lt;br/&gt;\n</pre>"
            ),
            "{}",
            &page[..page.len().min(2000)]
        );
        assert!(page.contains(MERMAID_JS), "Mermaid is inlined");
        // Inlined, a `</script>` in the bundle would end the script early.
        assert!(!MERMAID_JS.contains("</script"));
        assert!(page.contains("document.body.dataset.mermaid = \"rendered\""));
    }
}
