"""The shell of the web UI: layout, stylesheet, navigation, home and error pages."""
