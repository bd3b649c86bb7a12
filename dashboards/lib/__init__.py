"""The dashboard generator's library, one job per module (standard library only):

* style: colours, thresholds, value mappings
* queries: the data source, selectors, shared PromQL, query objects
* panels: one builder per panel type, table helpers
* board: grid layout, template variables, links, the dashboard object
* overview, target: the two dashboards, panel by panel
"""
