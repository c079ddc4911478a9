/**
 * Text → HTML text or attribute value. Model outputs and prompts can hold anything (`<script>`,
 * `&`, quotes); every string from a run goes through this before it reaches report.html, in element
 * content and in double- or single-quoted attributes alike.
 */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

const ESCAPES: Readonly<Record<string, string>> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
