"""What people read: run summaries and KPI tables, HTML/JUnit reports, point lists, Grafana
dashboards, progress bars.
"""
