//! A logo for an app whose source has none in the checkout: its trademark's initials
//! on a disc whose colour follows from the name, so the same app keeps its colour.

const COLOURS: [&str; 8] = [
    "#2563EB", "#7C3AED", "#DB2777", "#DC2626", "#EA580C", "#16A34A", "#0891B2", "#4B5563",
];

/// Up to two initials: the first letters of the first two words, or of a CamelCase
/// word's first two parts ("WordPress" → "WP"), else the first letter.
pub fn initials(trademark: &str) -> String {
    let words: Vec<&str> = trademark
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let mut letters: Vec<char> = match words.as_slice() {
        [] => vec!['?'],
        [one] => {
            let capitals: Vec<char> = one.chars().filter(|c| c.is_uppercase()).collect();
            if capitals.len() >= 2 && one.starts_with(char::is_uppercase) {
                capitals.into_iter().take(2).collect()
            } else {
                one.chars().take(1).collect()
            }
        }
        [first, second, ..] => [first, second]
            .iter()
            .filter_map(|w| w.chars().next())
            .collect(),
    };
    letters
        .iter_mut()
        .for_each(|c| *c = c.to_uppercase().next().unwrap_or(*c));
    letters.into_iter().collect()
}

pub fn initials_svg(trademark: &str, name: &str) -> String {
    let text = initials(trademark);
    let colour = COLOURS[name
        .bytes()
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize))
        % COLOURS.len()];
    let size = if text.chars().count() > 1 { 52 } else { 64 };
    let label = escape(trademark);
    let text = escape(&text);
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="128" height="128" viewBox="0 0 128 128" role="img" aria-label="{label}">
  <circle cx="64" cy="64" r="60" fill="{colour}"/>
  <text x="64" y="64" dy="0.35em" text-anchor="middle" font-family="Helvetica, Arial, sans-serif" font-weight="700" font-size="{size}" fill="#FFFFFF">{text}</text>
</svg>
"##
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initials_of_trademarks() {
        assert_eq!(initials("WordPress"), "WP");
        assert_eq!(initials("Uptime Kuma"), "UK");
        assert_eq!(initials("gitea"), "G");
        assert_eq!(initials("n8n"), "N");
        assert_eq!(initials("---"), "?");
        let svg = initials_svg("A&B <x>", "ab");
        assert!(
            svg.starts_with("<svg") && svg.contains("A&amp;B &lt;x&gt;"),
            "{svg}"
        );
    }
}
