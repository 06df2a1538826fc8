"""The phase report: sections, figures, sample browsers, build and publish. Uses analysis, runs and config."""
