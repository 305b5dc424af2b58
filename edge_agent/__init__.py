"""Edge agent: the classroom PC side (devices, WebRTC client, local control page)."""
