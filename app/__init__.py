"""The Streamlit dashboard: `streamlit run app/dashboard.py` (pages in app/views/)."""
