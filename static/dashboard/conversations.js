// The conversations list: its filter form works like the dashboard's (a time range picker whose
// custom times show for a custom range only); the list itself is rendered by the server.
"use strict";

monitor.wireFilters();
