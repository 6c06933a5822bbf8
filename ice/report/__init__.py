"""Reports of a matrix run (text, Markdown, HTML, JUnit, results.json) and the comparison of two runs."""
