"""Reports: trends of final codes from trigger-kept rollups, the CIT study report, dashboard."""
