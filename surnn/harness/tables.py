"""One table of the paper's, as rows of strings, rendered to Markdown and to LaTeX
(booktabs: ``\\usepackage{booktabs}``). Used by ``surnn.harness.paper_tables``."""

from __future__ import annotations

GEN_MARK = "†"  # a cell from data this harness generated; a dagger in LaTeX


class Table:
    """One table: a caption, a header, rows of strings and notes; rendered to Markdown
    and to LaTeX (booktabs)."""

    def __init__(self, caption: str, header: list[str], rows: list[list[str]], notes=()):
        self.caption, self.header, self.rows, self.notes = caption, header, rows, list(notes)

    def markdown(self) -> list[str]:
        out = [f"**{self.caption}**", "", "| " + " | ".join(self.header) + " |"]
        out.append("|---" * len(self.header) + "|")
        out += ["| " + " | ".join(r) + " |" for r in self.rows]
        return out + ([""] + [f"{n}" for n in self.notes] if self.notes else [])

    def latex(self) -> str:
        def esc(x: str) -> str:
            x = x.replace("\\", "\\textbackslash{}")
            for a, b in (("&", "\\&"), ("%", "\\%"), ("_", "\\_"), ("#", "\\#")):
                x = x.replace(a, b)
            return x.replace("±", "$\\pm$").replace(GEN_MARK, "$^\\dagger$").replace("–", "--")

        cols = "l" + "r" * (len(self.header) - 1)
        lines = [
            "\\begin{table}[t]",
            "\\centering",
            f"\\caption{{{esc(self.caption)}}}",
            f"\\begin{{tabular}}{{{cols}}}",
            "\\toprule",
            " & ".join(esc(h) for h in self.header) + " \\\\",
            "\\midrule",
            *[" & ".join(esc(c) for c in r) + " \\\\" for r in self.rows],
            "\\bottomrule",
            "\\end{tabular}",
        ]
        if self.notes:
            lines.append("\\par\\footnotesize " + " ".join(esc(n) for n in self.notes))
        return "\n".join(lines + ["\\end{table}", ""])
