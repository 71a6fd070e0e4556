"""What leaves edgelm: the report (JSON -> Markdown/HTML), the app bundle with snippets, the reference consumer."""
