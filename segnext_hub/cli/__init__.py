"""Click entry points. They parse options and print; the logic lives in the API."""
