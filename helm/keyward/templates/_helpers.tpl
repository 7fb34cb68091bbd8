{{- define "keyward.fullname" -}}
{{- printf "%s-keyward" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "keyward.labels" -}}
app.kubernetes.io/name: keyward
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "keyward.selector" -}}
app.kubernetes.io/name: keyward
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end -}}

{{- define "keyward.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "keyward.serviceAccount" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "keyward.fullname" .) .Values.serviceAccount.name }}{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}

{{- define "keyward.caSecret" -}}
{{ default (printf "%s-ca" (include "keyward.fullname" .)) .Values.ca.existingSecret }}
{{- end -}}

{{- define "keyward.webhook" -}}
{{- $root := .root -}}
- name: inject.keyward.dev
  admissionReviewVersions: ["v1"]
  sideEffects: None
  failurePolicy: {{ $root.Values.webhook.failurePolicy }}
  timeoutSeconds: {{ $root.Values.webhook.timeoutSeconds }}
  reinvocationPolicy: IfNeeded
  clientConfig:
    service:
      name: {{ include "keyward.fullname" $root }}-webhook
      namespace: {{ $root.Release.Namespace }}
      path: /mutate
      port: 443
    {{- if .caBundle }}
    caBundle: {{ .caBundle }}
    {{- end }}
  rules:
    - operations: ["CREATE"]
      apiGroups: [""]
      apiVersions: ["v1"]
      resources: ["pods"]
  namespaceSelector: {{- toYaml $root.Values.webhook.namespaceSelector | nindent 4 }}
  objectSelector: {{- toYaml $root.Values.webhook.objectSelector | nindent 4 }}
{{- end -}}
